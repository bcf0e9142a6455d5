"""Errors of a build, in their own module so the pipeline, the finish path and the gate share them."""

from __future__ import annotations


class IndexingError(RuntimeError):
    """A run could not finish; the alias was left where it was."""
