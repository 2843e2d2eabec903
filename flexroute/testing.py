"""Test helpers shipped with flexroute: run an ASGI app on loopback, run the provider emulator.

``emulator()`` yields a running emulator: point an SDK at ``running.base_url + "/v1"``, steer a
request with the ``x-emulator`` header, then read ``running.log()``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from flexroute.emulator import Emulator, EmulatorConfig, create_app

__all__ = ["RunningEmulator", "emulator", "serve_in_thread"]


def _bound_socket(host: str) -> socket.socket:
    """A socket bound to a free port, handed to uvicorn so no other process can take it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", *, timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a daemon thread; yield its base URL.

    The port is bound before the server starts (no race for it), and the URL is yielded once
    the server accepts connections. On exit the server stops: in-flight responses get a second
    to finish, then the thread is joined (at most ``timeout`` seconds) and the port freed.
    """
    sock = _bound_socket(host)
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=75,  # as providers' load balancers: pooled clients rarely race a close
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} failed to start")
        if time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start in {timeout}s")
        time.sleep(0.01)
    authority = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{authority}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@dataclass(frozen=True)
class RunningEmulator:
    """An emulator serving on loopback: its URL, its attempt log, a reset."""

    base_url: str
    app: Emulator

    def log(self) -> list[dict[str, Any]]:
        """Attempt records in arrival order (see ``flexroute.emulator.log.AttemptRecord``)."""
        return self.app.log.snapshot()

    def reset(self) -> None:
        """Clear the log and the per-request counters, and restart the seeded sequence."""
        self.app.reset()


@contextmanager
def emulator(
    config: EmulatorConfig | None = None, clock: Callable[[], float] | None = None
) -> Iterator[RunningEmulator]:
    """Run the emulator in a thread. Default config: ``fast=True`` (answers at once unless a
    request's ``x-emulator`` header says otherwise), so tests state the delays they need.
    ``clock`` drives the flex weather (``EmulatorConfig.weather``), so a test can set it."""
    app = create_app(config or EmulatorConfig(fast=True), clock)
    with serve_in_thread(app) as url:
        yield RunningEmulator(url, app)
