"""Query suggestions: the query log's prefix and session indices, LM completions, safety filters."""
