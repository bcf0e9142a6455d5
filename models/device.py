"""The one device resolver: explicit argument, then SIFT_DEVICE, then cuda, mps, cpu.

Nobody else in the code base picks a device, so one setting moves every model.
"""

from __future__ import annotations

import os


def resolve_device(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("SIFT_DEVICE")
    if env:
        return env
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def accelerator_available() -> bool:
    """Whether the resolver would pick a GPU, so callers can ask for one without naming a backend."""
    return resolve_device() != "cpu"


def limit_threads(n: int) -> None:
    """torch and BLAS default to every core; with several replicas per machine that oversubscribes."""
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn / sentence-transformers
        pass
