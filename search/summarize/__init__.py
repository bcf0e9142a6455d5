"""Cited summaries of search results: prompt, generation, citation parsing, the grounding check."""
