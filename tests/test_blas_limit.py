"""The API process runs BLAS on one thread per call (serving.backend.limit_blas): concurrent searches are the
parallelism, and a BLAS pool per kNN product on top of them only spins on a small machine."""

from __future__ import annotations

import threadpoolctl

from serving.backend import limit_blas


def test_limit_blas_sets_every_blas_pool() -> None:
    import numpy  # noqa: F401  (loads its BLAS)

    before = threadpoolctl.threadpool_info()
    try:
        limit_blas(1)
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas, "numpy's BLAS is loaded"
        assert all(i["num_threads"] == 1 for i in blas)
    finally:
        for info in before:
            if info["user_api"] == "blas":
                threadpoolctl.threadpool_limits(info["num_threads"], user_api="blas")
