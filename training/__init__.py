"""Shared evaluation used by bench, training and reindex gates."""
