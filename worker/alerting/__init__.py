"""Alerting: the alert-rule schema (`rules`), the state of each rule on each account (`engine`), the nudge as
it travels (`message`: key, payload, Block Kit) and the silences that hold nudges back (`silences`)."""
