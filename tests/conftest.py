"""Shared fixtures: the emulator and the proxy on loopback, a fresh SQLite ledger per test."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from flexroute.config import Settings
from flexroute.proxy import create_app
from flexroute.testing import emulator as run_emulator
from flexroute.testing import serve_in_thread


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
        "openai_base_url": emulator_url,
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
