"""SIGKILL the proxy at random moments under concurrent billable requests: every answer the
client saw has exactly one ledger record, and balances equal the sum of fees (SPEC §4)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

from flexroute.ledger import open_store

ROOT = Path(__file__).parent.parent
SEEDS = (1, 2, 3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_proxy(database_url: str, emulator_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "FLEXROUTE_DATABASE_URL": database_url,
        "FLEXROUTE_OPENAI_BASE_URL": emulator_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexroute.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/flexroute/v1/health", timeout=1):  # noqa: S310
                return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the proxy did not start") from None
            time.sleep(0.05)


async def hammer(url: str, answered: list[str], workers: int = 16) -> None:
    """Billable flex requests from ``workers`` loops until the proxy dies."""
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0)

    async def loop() -> None:
        while True:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-5-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_body={"start_within": "5s"},
                    extra_headers={"x-emulator": "flex_queue=0.01"},
                )
                raw.parse()
            except openai.APIError:
                return
            answered.append(raw.headers["x-flexroute-request-id"])

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(loop)
    await client.close()


def crash_round(database_url: str, emulator_url: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    proc, url = start_proxy(database_url, emulator_url)
    answered: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(hammer, url, answered)
            # Kill mid-load: a seeded moment after the first answer (a loaded machine may take
            # a second to warm up, and a kill before any answer would test nothing).
            with anyio.fail_after(30):
                while not answered:
                    await anyio.sleep(0.01)
            await anyio.sleep(rng.uniform(0.1, 1.0))
            os.kill(proc.pid, signal.SIGKILL)

    try:
        anyio.run(main)
    finally:
        proc.kill()
        proc.wait()
    return answered


async def check(database_url: str, answered: list[str]) -> None:
    store = open_store(database_url)  # reopening is the restart: SQLite replays its WAL here
    try:
        fees = Decimal(0)
        for request_id in answered:
            record = await store.get(request_id)
            assert record is not None, f"answered request {request_id} has no ledger record"
            assert record.route == "flex"
            fees += record.fee
        rows = await store.usage()
        assert sum(r.requests for r in rows) >= len(answered)
        total_fees = sum((r.fee for r in rows), Decimal(0))
        assert (await store.org("default")).unpaid_balance == total_fees >= fees > 0
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_never_loses_an_answered_request(
    backend: str, tmp_path: Path, emulator: Any, request: pytest.FixtureRequest
) -> None:
    """Over several seeds, a killed proxy leaves every answered request recorded once."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_url")
    answered_all: list[str] = []
    for seed in SEEDS:
        answered = crash_round(url, emulator.base_url, seed)
        assert answered, f"seed {seed}: no request was answered before the kill"
        answered_all += answered
        assert len(set(answered_all)) == len(answered_all)
        anyio.run(check, url, answered_all)
