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
    with module_process("flexroute.cli", args, ready_url, env) as proc:
        yield proc.pid


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


@contextlib.contextmanager
def emulator_process(args: tuple[str, ...] = ()) -> Iterator[str]:
    """``flexroute emulate`` on a free loopback port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(["emulate", "--port", str(port), *args], f"{url}/v1/models"):
        yield url


@contextlib.contextmanager
def proxies(emulator: str, workdir: Path, envs: list[dict[str, str]]) -> Iterator[list[str]]:
    """One ``flexroute serve`` per entry of ``envs`` (extra settings), each with a ledger of
    its own and in-process state only (no Redis), started together; yields their URLs."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "FLEXROUTE_REDIS_URL"}
    base.update(FLEXROUTE_OPENAI_BASE_URL=emulator, OPENAI_API_KEY="")
    with contextlib.ExitStack() as stack:
        started = []
        for i, extra in enumerate(envs):
            port = free_port()
            env = {**base, "FLEXROUTE_DATABASE_URL": f"sqlite:///{workdir / f'ledger-{i}.db'}"}
            err = stack.enter_context((workdir / f"proxy-{i}.err").open("wb"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "flexroute.cli", "serve", "--port", str(port)],
                env={**env, **extra},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            stack.enter_context(stopping(proc))
            started.append(f"http://127.0.0.1:{port}")
        for i, url in enumerate(started):
            try:
                wait_ready(f"{url}/flexroute/v1/health", timeout=60)
            except OSError:
                tail = (workdir / f"proxy-{i}.err").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"flexroute serve did not start: {tail}") from None
        yield started


@contextlib.contextmanager
def module_process(
    module: str, args: list[str], ready_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m MODULE ARGS`` until it answers ``ready_url``; always stops it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with stopping(proc):
        try:
            wait_ready(ready_url)
        except OSError:
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise RuntimeError(f"{module} did not start: {err.decode()[-2000:]}") from None
        yield proc


@contextlib.contextmanager
def stopping(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Terminate ``proc`` (then kill it) however the block ends."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def fast_emulators(workers: int) -> Iterator[tuple[str, list[int]]]:
    """``workers`` fast-mode emulator processes sharing one port (SO_REUSEPORT).

    Yields (base URL, pids). The kernel spreads connections over the workers.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        procs = []
        for _ in range(workers):
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks._fast_emulator", "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.enter_context(stopping(proc))
            procs.append(proc)
        wait_ready(f"{url}/v1/models")
        time.sleep(0.3 if workers > 1 else 0.0)  # let every worker reach accept()
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a fast emulator worker exited at start")
        yield url, [p.pid for p in procs]


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the given processes (from /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of the given processes (VmRSS), summed."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total
