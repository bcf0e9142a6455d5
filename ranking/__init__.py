"""Neural reranking and score explanations (see the search-API issue)."""
