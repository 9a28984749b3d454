"""The rules in force (`in_force`: the last rule files that loaded cleanly) and the tools ops check a change
with before it goes live: rule tests for alerts and the scorecard, `rules diff`, `rules preview`."""
