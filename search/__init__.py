"""Sift's domain core: documents, settings, index stores, retrieval."""
