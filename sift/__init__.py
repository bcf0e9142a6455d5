"""Entry points (the `sift` command)."""
