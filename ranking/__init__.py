"""Ranking stages applied after retrieval: rank fusion and the rerank stage (learning to rank and explanations
land here too). Imports `models` only, so `search` can use every stage."""
