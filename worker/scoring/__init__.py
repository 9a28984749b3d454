"""Scoring: the measures (SQL over the store), the scorecard schema, the engine that turns measures into
points, groups and scores, sentiment computed locally, overrides, explanations and the latest scores."""
