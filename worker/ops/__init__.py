"""Operations: `healthbeat doctor` and the Salesforce fields the worker needs (`salesforce fields`)."""
