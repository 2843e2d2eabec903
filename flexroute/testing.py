"""Test helpers shipped with flexroute: run an ASGI app on loopback, run the provider emulator.

``emulator()`` yields a running emulator: point an SDK at ``running.base_url + "/v1"``, steer a
request with the ``x-emulator`` header, then read ``running.log()``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from flexroute.emulator import Emulator, EmulatorConfig, create_app

__all__ = ["RunningEmulator", "emulator", "serve_in_thread"]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", *, timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a daemon thread; yield its base URL.

    Waits until the server accepts connections; on exit asks it to stop, waits for in-flight
    responses to end (at most ``timeout`` seconds), then joins the thread.
    """
    port = _free_port(host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="auto",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server on {host}:{port} failed to start")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start in {timeout}s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


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
def emulator(config: EmulatorConfig | None = None) -> Iterator[RunningEmulator]:
    """Run the emulator in a thread. Default config: ``fast=True`` (answers at once unless a
    request's ``x-emulator`` header says otherwise), so tests state the delays they need."""
    app = create_app(config or EmulatorConfig(fast=True))
    with serve_in_thread(app) as url:
        yield RunningEmulator(url, app)
