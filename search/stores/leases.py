"""Lease bookkeeping shared by both stores' build locks: who holds a lock, until when, and when it is stale.

A lease expires so that a SIGKILLed build cannot lock an index for ever; on the same host a holder whose pid is
gone is stale at once (no need to wait out the lease after a crash).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from search.stores.base import LeaseInfo, LockHeld


def new_lease(index: str, owner: str, lease_s: float, token: str | None = None) -> LeaseInfo:
    """A lease held by this process from now for `lease_s` seconds."""
    if lease_s <= 0:
        raise ValueError(f"lease_s must be positive, not {lease_s}")
    now = datetime.now(UTC)
    return LeaseInfo(
        index=index,
        owner=owner,
        host=socket.gethostname(),
        pid=os.getpid(),
        token=token or uuid.uuid4().hex,
        acquired=now,
        expires=now + timedelta(seconds=lease_s),
    )


def renewed(lease: LeaseInfo, lease_s: float) -> LeaseInfo:
    """The same lease (same token) with its expiry moved `lease_s` seconds from now."""
    return lease.model_copy(update={"expires": datetime.now(UTC) + timedelta(seconds=lease_s)})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(lease: LeaseInfo, now: datetime | None = None) -> bool:
    """Expired, or held by a process of this host that no longer exists."""
    if lease.expires <= (now or datetime.now(UTC)):
        return True
    return lease.host == socket.gethostname() and lease.pid != os.getpid() and not pid_alive(lease.pid)


def held_error(lease: LeaseInfo) -> LockHeld:
    return LockHeld(
        f"index {lease.index!r} is being built by {lease.describe()}; wait for it to finish, or for its lease "
        "to expire if it died"
    )
