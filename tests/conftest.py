"""Shared fixtures: the emulator and the proxy on loopback, a fresh SQLite ledger per test."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from flexroute.config import Settings
from flexroute.proxy import create_app
from flexroute.testing import RunningEmulator, serve_in_thread
from flexroute.testing import emulator as run_emulator


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    """One emulator for the session; its log is cleared before each test that uses ``proxy``."""
    with run_emulator() as running:
        yield running


@dataclass
class Proxy:
    url: str
    settings: Settings

    def client(self, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(
            api_key="sk-test-client", base_url=f"{self.url}/v1", max_retries=0, **options
        )

    def async_client(self, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="sk-test-client", base_url=f"{self.url}/v1", max_retries=0, **options
        )

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:  # noqa: S310
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def record(self, request_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.get(f"/flexroute/v1/requests/{request_id}")
        return data


def make_settings(tmp_path: Path, emulator_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        # The form OpenAI users write (with /v1); tests/test_drop_in.py covers the others.
        "openai_base_url": f"{emulator_url}/v1",
        "gemini_base_url": emulator_url,
        "anthropic_base_url": emulator_url,
        "database_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "openai_api_key": None,
        "gemini_api_key": None,
        "google_api_key": None,
        "anthropic_api_key": None,
        **overrides,
    }
    return Settings.model_validate(values)


@pytest.fixture
def proxy(tmp_path: Path, emulator: Any) -> Iterator[Proxy]:
    """The proxy in sidecar mode against the emulator, with its own ledger file."""
    emulator.reset()
    settings = make_settings(tmp_path, emulator.base_url)
    with serve_in_thread(create_app(settings)) as url:
        yield Proxy(url, settings)


PG_BASE = "postgresql://{user}@127.0.0.1:5432/test"


def _pg_admin_url() -> str | None:
    """The machine's PostgreSQL (trust auth), as ``postgres`` or ``root``; None if down."""
    import psycopg

    for user in ("postgres", "root"):
        url = PG_BASE.format(user=user)
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    return None


@pytest.fixture(scope="session")
def pg_admin() -> str:
    url = _pg_admin_url()
    if url is None:
        pytest.fail("PostgreSQL on 127.0.0.1:5432 (database test) is down: run .ci/run")
    return url


@pytest.fixture
def pg_url(pg_admin: str) -> Iterator[str]:
    """A store URL on a fresh schema of the real PostgreSQL, dropped after the test."""
    import uuid

    import psycopg

    schema = f"flexroute_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_admin}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def emu(emulator: RunningEmulator) -> RunningEmulator:
    """The shared emulator with an empty log, for tests that talk to it directly."""
    emulator.reset()
    return emulator


@pytest.fixture
def client(emu: RunningEmulator) -> openai.OpenAI:
    """The real openai SDK pointed straight at the emulator."""
    return openai.OpenAI(api_key="sk-emulator-test", base_url=f"{emu.base_url}/v1", max_retries=0)


@pytest.fixture
def settings(tmp_path: Path, emulator: Any) -> Settings:
    """For wrapped SDK clients: a fresh ledger, upstream base URLs left at the providers'
    public defaults (a client's own base URL at the emulator wins)."""
    emulator.reset()
    return Settings(database_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}")


def attempts(emulator: Any, request_id: str) -> list[dict[str, Any]]:
    """The emulator's log entries for one flexroute request, in arrival order."""
    entries = [e for e in emulator.log() if e["client_request_id"] == request_id]
    return sorted(entries, key=lambda e: e["arrived_at"])


def threads_started_since(before: set[threading.Thread], timeout: float = 3.0) -> set[str]:
    """Names of threads started since ``before`` still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        extra = {t.name for t in threading.enumerate() if t not in before and t.is_alive()}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """localstripe on a free port (it listens on every interface; it has no --host)."""
    binary = shutil.which("localstripe")
    if binary is None:
        pytest.fail("localstripe is not installed: pip install -e '.[test]'")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("localstripe did not start")
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
