"""Ending a local Ray session without ending the process.

Lives in `models/` (the room every other one may import) because indexing, training, suggestions and the
serving CLI all start and stop Ray in-process, and a notebook may do so many times.
"""

from __future__ import annotations

import gc


def shutdown_ray() -> None:
    """`ray.shutdown()`, after a full garbage collection while the core worker is still up.

    Ray objects caught in reference cycles (an `ObjectRef` held by an exception's traceback, Serve's
    controller client) are otherwise freed by whichever thread next runs the cyclic collector. When that
    happens after the shutdown, their finalizers call into a core worker that is gone and Ray ends the whole
    process ("The core worker has already been shutdown"): a full test run died that way, in a daemon thread,
    a fraction of a second after a Serve module's teardown. Collecting first frees them while Ray can.
    """
    import ray

    if not ray.is_initialized():
        return
    gc.collect()
    ray.shutdown()
