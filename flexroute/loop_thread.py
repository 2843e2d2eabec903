"""The sync SDK wrapper's event loop, on a thread of its own, and how it ends.

The loop runs on a *daemon* thread, so a script that never calls ``close()`` still exits
(anyio's own portal runs in a pool thread that the interpreter joins at exit: it hung there).
Such a script is also cleaned up: an ``atexit`` hook — run while threads still run — does what
``close()`` would (closes the provider connections and the ledger), each wait bounded and any
call still in flight (a Ctrl-C mid-call) cancelled, so the exit is prompt. Later, once the
interpreter is finalizing (an SDK client's ``__del__``, as google-genai's), the thread can no
longer run, so nothing waits on it.
"""

from __future__ import annotations

import atexit
import importlib.util
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread

__all__ = ["EXIT_WAIT", "LoopThread"]

# uvloop (with uvicorn[standard]) cuts the sync client's thread hop: ~0.25 ms a call.
_HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
EXIT_WAIT = 5.0  # seconds each clean-up step may take at interpreter exit


class LoopThread:
    """An event loop on a daemon thread, reached through ``portal``; ``on_exit`` is called
    (with ``EXIT_WAIT``) at interpreter exit unless ``stop()`` came first."""

    def __init__(self, on_exit: Callable[[float], None]) -> None:
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._thread = threading.Thread(target=self._run, name="flexroute-sdk", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        owner = weakref.WeakMethod(on_exit) if hasattr(on_exit, "__self__") else None

        def at_exit() -> None:  # holds no strong reference to the transport
            callback = owner() if owner is not None else on_exit
            if callback is not None:
                callback(EXIT_WAIT)

        self._at_exit = at_exit
        atexit.register(at_exit)

    @property
    def portal(self) -> anyio.from_thread.BlockingPortal:
        assert self._portal is not None
        return self._portal

    @property
    def usable(self) -> bool:
        """Whether the loop can still run a call: never once the interpreter is finalizing."""
        return self._thread.is_alive() and not sys.is_finalizing()

    def run(self, fn: Callable[[], Awaitable[Any]], wait: float | None = None) -> None:
        """Run ``fn`` on the loop; with ``wait``, give up after that many seconds."""
        self.portal.start_task_soon(fn).result(timeout=wait)

    def _run(self) -> None:
        async def main() -> None:
            async with anyio.from_thread.BlockingPortal() as portal:
                self._portal = portal
                self._ready.set()
                await portal.sleep_until_stopped()

        try:
            anyio.run(main, backend_options={"use_uvloop": _HAS_UVLOOP})
        except BaseException as error:  # reported to the thread that started the loop
            self._failure = error
        finally:
            self._ready.set()

    def stop(self, *, cancel: bool = False, timeout: float = 10.0) -> None:
        """End the loop (``cancel``: cancelling calls still running) and join the thread."""
        atexit.unregister(self._at_exit)
        if self.usable:
            self.portal.start_task_soon(self.portal.stop, cancel).result(timeout=timeout)
            self._thread.join(timeout)
