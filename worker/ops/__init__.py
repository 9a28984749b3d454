"""Operations: `healthbeat doctor`, the Salesforce fields the worker needs (`salesforce fields`), and
`healthbeat browse` (the store read-only in Datasette, with its catalogue)."""
