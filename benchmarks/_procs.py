"""Start the emulator and the proxy as separate processes on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 -- loopback only
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def process(args: list[str], ready_url: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run ``python -m flexroute.cli ARGS``; yields its pid; always terminates it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexroute.cli", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        try:
            wait_ready(ready_url)
        except OSError:
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise RuntimeError(f"{args[0]} did not start: {err.decode()[-2000:]}") from None
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def emulator_and_proxy(workdir: Path) -> Iterator[tuple[str, str, int]]:
    """Yields (emulator URL, proxy URL, proxy pid)."""
    eport, pport = free_port(), free_port()
    emulator = f"http://127.0.0.1:{eport}"
    proxy = f"http://127.0.0.1:{pport}"
    env = {
        "FLEXROUTE_OPENAI_BASE_URL": emulator,
        "FLEXROUTE_DATABASE_URL": f"sqlite:///{workdir / 'bench-ledger.sqlite3'}",
        "OPENAI_API_KEY": "",
    }
    with (
        process(["emulate", "--port", str(eport)], f"{emulator}/v1/models"),
        process(["serve", "--port", str(pport)], f"{proxy}/flexroute/v1/health", env) as pid,
    ):
        yield emulator, proxy, pid
