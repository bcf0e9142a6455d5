"""Sources → clean → chunk → embed → versioned index write."""
