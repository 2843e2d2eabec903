"""Gateway-mode test setup: organisations with flexroute keys and sealed provider keys."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import openai

from flexroute.config import Settings
from flexroute.ledger import open_store
from flexroute.ledger.keys import ApiKey, SealedProviderKey, fingerprint, hash_key, new_key
from flexroute.proxy import create_app
from flexroute.sealing import Sealer
from flexroute.testing import serve_in_thread
from tests.conftest import make_settings

SECRET = "test-gateway-secret-0123456789abcdef"
PROVIDERS = ("openai", "gemini", "anthropic")


@dataclass
class Org:
    name: str
    key: str
    key_id: str
    provider_keys: dict[str, str] = field(default_factory=dict)


@dataclass
class Gateway:
    url: str
    settings: Settings
    orgs: dict[str, Org]

    def openai(self, org: str | None = None, key: str | None = None) -> openai.OpenAI:
        api_key = key if key is not None else self.orgs[org or "acme"].key
        return openai.OpenAI(api_key=api_key, base_url=f"{self.url}/v1", max_retries=0)


def gateway_settings(tmp_path: Path, emulator_url: str, **overrides: Any) -> Settings:
    return make_settings(tmp_path, emulator_url, secret_key=SECRET, **overrides)


def add_key(settings: Settings, org: str, tier: str = "free") -> tuple[str, str]:
    """A new flexroute key for ``org``: ``(key_id, key)``."""
    key_id, key = new_key()

    async def main() -> None:
        store = open_store(settings.database_url)
        try:
            await store.create_key(
                ApiKey(key_id, org, tier, False, dt.datetime.now(dt.UTC)), hash_key(key)
            )
        finally:
            await store.aclose()

    anyio.run(main)
    return key_id, key


def revoke_key(settings: Settings, key_id: str) -> None:
    async def main() -> None:
        store = open_store(settings.database_url)
        try:
            assert await store.revoke_key(key_id)
        finally:
            await store.aclose()

    anyio.run(main)


def add_provider_key(settings: Settings, org: str, provider: str, secret: str) -> None:
    sealer = Sealer.from_settings(settings)

    async def main() -> None:
        store = open_store(settings.database_url)
        try:
            await store.set_provider_key(
                SealedProviderKey(
                    org,
                    provider,
                    sealer.seal(secret, org, provider),
                    fingerprint(secret),
                    dt.datetime.now(dt.UTC),
                )
            )
        finally:
            await store.aclose()

    anyio.run(main)


def seed(settings: Settings, names: tuple[str, ...], tier: str = "free") -> dict[str, Org]:
    """Each org gets one key and a unique fake key for every provider."""
    orgs = {}
    for name in names:
        key_id, key = add_key(settings, name, tier)
        org = Org(name, key, key_id)
        for provider in PROVIDERS:
            secret = f"sk-{provider}-{name}-{uuid.uuid4().hex}"
            add_provider_key(settings, name, provider, secret)
            org.provider_keys[provider] = secret
        orgs[name] = org
    return orgs


@contextmanager
def running_gateway(
    settings: Settings, names: tuple[str, ...] = ("acme", "globex"), **options: Any
) -> Iterator[Gateway]:
    orgs = seed(settings, names)
    with serve_in_thread(create_app(settings, **options)) as url:
        yield Gateway(url, settings, orgs)
