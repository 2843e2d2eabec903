"""The clock of request deadlines: the running event loop's, read cheaply.

anyio's cancel scopes (the router's deadline) count on ``anyio.current_time()``, which on
asyncio is the loop's ``time()``. Asking anyio costs a backend lookup through sniffio on
every read (about 1 µs, against 0.05 µs for the loop's own clock), and a request reads the
clock a dozen times: measured with ``/proc`` CPU time, that lookup was a tenth of a
passthrough request's CPU. :func:`now` reads the same clock straight from the asyncio loop
and asks anyio only where no asyncio loop runs (trio under the SDK wrapper).
"""

from __future__ import annotations

import asyncio

import anyio

__all__ = ["now"]


def now() -> float:
    """Seconds on the running event loop's clock (``anyio.current_time()``, cheaper)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio, say
        return anyio.current_time()
    return loop.time()
