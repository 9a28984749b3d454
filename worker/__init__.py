"""Healthbeat's worker: sync → score → evaluate → write back → notify → prune, a package per role (README, "Layout")."""
