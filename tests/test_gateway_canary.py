"""Canaries: unique fake provider keys (stored with `providers set`, or sent by clients) and
flexroute keys never appear in logs, error bodies, /metrics or the database in plain text."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
from google import genai
from google.genai import types

from flexroute.cli import main
from flexroute.testing import RunningEmulator
from tests.gateway_env import SECRET, add_key, gateway_settings, running_gateway
from tests.test_limits import fetch_status, free_port, wait_healthy

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def exercise(url: str, key: str, client_canary: str, emu: RunningEmulator) -> list[str]:
    """Successful, streaming, failing and unauthorised calls; every error body seen."""
    client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
    client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)
    for _ in client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES, stream=True):
        pass
    gemini = genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=url, api_version="v1beta")
    )
    gemini.models.generate_content(model="gemini-2.5-flash", contents="hi")
    bodies = []
    for status in ("401", "500"):
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(
                model="gpt-5-mini",
                messages=MESSAGES,
                extra_headers={"x-emulator": f"status={status}"},
            )
        bodies.append(raised.value.response.text)
    stranger = openai.OpenAI(api_key=client_canary, base_url=f"{url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)
    bodies.append(refused.value.response.text)
    bodies.append(fetch_status(url, f"/flexroute/v1/requests/x?key={client_canary}", key)[1])
    return bodies


def set_provider_keys(db_url: str, org: str) -> dict[str, str]:
    """``flexroute providers set`` for each provider, each a unique canary."""
    canaries = {}
    os.environ["FLEXROUTE_DATABASE_URL"] = db_url
    os.environ["FLEXROUTE_SECRET_KEY"] = SECRET
    try:
        for provider in ("openai", "gemini", "anthropic"):
            canaries[provider] = f"sk-canary-{provider}-{uuid.uuid4().hex}"
            stdin, sys.stdin = sys.stdin, io.StringIO(canaries[provider] + "\n")
            try:
                assert main(["providers", "set", org, provider]) == 0
            finally:
                sys.stdin = stdin
    finally:
        del os.environ["FLEXROUTE_DATABASE_URL"], os.environ["FLEXROUTE_SECRET_KEY"]
    return canaries


def assert_absent(secrets: list[str], **places: str | bytes) -> None:
    for name, text in places.items():
        data = text if isinstance(text, bytes) else text.encode()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:14]}… found in {name}"


class TestCanary:
    def test_sqlite_replica_leaks_no_key(
        self, tmp_path: Path, emu: RunningEmulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A `flexroute serve` process: stdout, stderr, error bodies, /metrics, ledger bytes."""
        db = tmp_path / "ledger.sqlite3"
        settings = gateway_settings(tmp_path, emu.base_url)
        key_id, key = add_key(settings, "acme")
        canaries = set_provider_keys(f"sqlite:///{db}", "acme")
        capsys.readouterr()
        server_canary = f"sk-canary-server-{uuid.uuid4().hex}"
        client_canary = f"sk-canary-client-{uuid.uuid4().hex}"
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "FLEXROUTE_DATABASE_URL": f"sqlite:///{db}",
            "FLEXROUTE_OPENAI_BASE_URL": emu.base_url,
            "FLEXROUTE_GEMINI_BASE_URL": emu.base_url,
            "FLEXROUTE_SECRET_KEY": SECRET,
            "FLEXROUTE_ADMIN_KEY": "admin",
            "OPENAI_API_KEY": server_canary,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "flexroute.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            bodies = exercise(url, key, client_canary, emu)
            metrics = fetch_status(url, "/metrics", "admin")[1]
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
        assert "flexroute_requests_total" in metrics
        files = {p.name: p.read_bytes() for p in tmp_path.glob("ledger.sqlite3*")}
        secrets = [*canaries.values(), server_canary, client_canary, key]
        assert_absent(secrets, stdout=out, stderr=err, metrics=metrics, **files)
        assert_absent(secrets, **{f"body{i}": b for i, b in enumerate(bodies)})
        assert_absent([*secrets, SECRET], cli_output=capsys.readouterr().out)
        assert key_id.encode() in files["ledger.sqlite3"] + files.get("ledger.sqlite3-wal", b"")

    def test_postgresql_tables_and_python_logs_hold_no_key(
        self,
        pg_url: str,
        tmp_path: Path,
        emu: RunningEmulator,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """In process, every logger at DEBUG, a PostgreSQL ledger: no key in logs or tables."""
        caplog.set_level(logging.DEBUG)
        settings = gateway_settings(tmp_path, emu.base_url, database_url=pg_url, admin_key="a")
        client_canary = f"sk-canary-client-{uuid.uuid4().hex}"
        with running_gateway(settings, ("acme",)) as gateway:
            org = gateway.orgs["acme"]
            bodies = exercise(gateway.url, org.key, client_canary, emu)
            metrics = fetch_status(gateway.url, "/metrics", "a")[1]
        with psycopg.connect(pg_url) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )]  # fmt: skip
            assert {"api_keys", "provider_keys", "requests"} <= set(tables)
            dump = "\n".join(
                str(row)
                for table in tables
                for row in conn.execute(f"SELECT t::text FROM {table} t")  # noqa: S608 -- catalog names
            )
        secrets = [*org.provider_keys.values(), client_canary, org.key]
        logs = "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)
        assert_absent(secrets, tables=dump, logs=logs, metrics=metrics)
        assert_absent(secrets, **{f"body{i}": b for i, b in enumerate(bodies)})
        assert "sealed" not in dump or "fr1." in dump
