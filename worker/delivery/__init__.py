"""Delivery: the effects the outbox owes, carried out once each: scores to Salesforce (`writeback`), nudges to
Slack (`notify`)."""
