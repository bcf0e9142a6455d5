"""Click logs → click models → training data; fine-tuning jobs."""
