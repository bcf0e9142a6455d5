"""`models.ray_session.shutdown_ray`: Ray garbage in reference cycles is freed before the core worker goes."""

from __future__ import annotations

import gc
import weakref

from models.ray_session import shutdown_ray


class _Cycle:
    """Holds an ObjectRef in a reference cycle, as an exception's traceback or Serve's client does."""

    def __init__(self, ref: object) -> None:
        self.ref = ref
        self.me = self


def test_cyclic_ray_garbage_is_freed_before_shutdown() -> None:
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    gc.disable()  # the cycle must outlive ordinary collections, as long-lived garbage does
    try:
        cycle = _Cycle(ray.put(b"x" * 1024))
        alive = weakref.ref(cycle)
        del cycle
        assert alive() is not None  # only the cyclic collector can free it
        freed_while_up: list[bool] = []
        real_shutdown = ray.shutdown

        def shutdown_spy() -> None:
            freed_while_up.append(alive() is None and ray.is_initialized())
            real_shutdown()

        ray.shutdown = shutdown_spy  # type: ignore[assignment]
        try:
            shutdown_ray()
        finally:
            ray.shutdown = real_shutdown  # type: ignore[assignment]
        assert freed_while_up == [True]
        assert not ray.is_initialized()
        shutdown_ray()  # idempotent: nothing to stop
    finally:
        gc.enable()
        if ray.is_initialized():
            ray.shutdown()
