"""Sources → clean → chunk → embed (models.embedder) → versioned index write → alias swap."""
