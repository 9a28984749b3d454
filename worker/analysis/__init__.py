"""Does the score see churn coming? Outcomes from the CRM, the backtest replayed from the store, tuning, charts."""
