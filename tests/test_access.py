"""Keys and provider keys: the store on both backends, sealing, and the CLI commands."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from flexroute.cli import main
from flexroute.ledger import open_store
from flexroute.ledger.keys import ApiKey, SealedProviderKey, hash_key, new_key
from flexroute.proxy.gateway import earned_tier
from flexroute.sealing import Sealer, SealError

NOW = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)


class TestStore:
    def test_keys_and_provider_keys_round_trip(self, store_url: str) -> None:
        """Keys are found by hash only, revocation sticks, provider keys upsert per org."""

        async def steps() -> None:
            store = open_store(store_url)
            try:
                assert not await store.has_keys()
                key_id, key = new_key()
                await store.create_key(ApiKey(key_id, "acme", "free", False, NOW), hash_key(key))
                assert await store.has_keys()
                found = await store.key_by_hash(hash_key(key))
                assert found == ApiKey(key_id, "acme", "free", False, NOW)
                assert await store.key_by_hash(hash_key(key + "x")) is None
                assert await store.revoke_key(key_id)
                assert not await store.revoke_key("key_missing")
                [listed] = await store.keys("acme")
                assert listed.revoked
                assert await store.keys("globex") == []
                for sealed in ("one", "two"):
                    await store.set_provider_key(
                        SealedProviderKey("acme", "openai", sealed, "sha256:x", NOW)
                    )
                stored = await store.provider_key("acme", "openai")
                assert stored is not None
                assert stored.sealed == "two"
                assert await store.provider_key("globex", "openai") is None
                assert [k.provider for k in await store.provider_keys()] == ["openai"]
            finally:
                await store.aclose()

        anyio.run(steps)


class TestSealing:
    def test_an_envelope_opens_only_for_its_org_and_provider(self) -> None:
        """The org and provider are associated data: a moved ciphertext fails to open."""
        sealer = Sealer("secret-a")
        envelope = sealer.seal("sk-live-123", "acme", "openai")
        assert "sk-live-123" not in envelope
        assert sealer.open(envelope, "acme", "openai") == "sk-live-123"
        for org, provider in (("globex", "openai"), ("acme", "gemini")):
            with pytest.raises(SealError):
                sealer.open(envelope, org, provider)
        with pytest.raises(SealError, match="FLEXROUTE_SECRET_KEY_PREVIOUS"):
            Sealer("secret-b").open(envelope, "acme", "openai")

    def test_tiers_rise_with_lifetime_paid_spend(self) -> None:
        """Paid invoices reaching a threshold raise the tier; nothing ever lowers it."""
        thresholds = {"elevated": Decimal(20), "paid": Decimal(500)}
        assert earned_tier(Decimal("19.99"), thresholds) == "free"
        assert earned_tier(Decimal(20), thresholds) == "elevated"
        assert earned_tier(Decimal(900), thresholds) == "paid"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "ledger.sqlite3"
    monkeypatch.setenv("FLEXROUTE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("FLEXROUTE_SECRET_KEY", "secret-a")
    return db


class TestCommands:
    def test_keys_create_list_revoke(self, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The key is printed once; list shows ids and tiers, never the key; revoke sticks."""
        assert main(["keys", "create", "--org", "acme", "--tier", "paid"]) == 0
        key = capsys.readouterr().out.strip()
        assert key.startswith("fr_")
        assert len(key) > 40
        assert main(["keys", "list", "--json"]) == 0
        out = capsys.readouterr().out
        assert key not in out
        [listed] = json.loads(out)
        assert (listed["org_id"], listed["tier"], listed["revoked"]) == ("acme", "paid", False)
        assert key not in env.read_bytes().decode("latin-1")
        assert main(["keys", "revoke", listed["key_id"]]) == 0
        assert capsys.readouterr().out.startswith(f"revoked {listed['key_id']}")
        main(["keys", "list", "--json"])
        assert json.loads(capsys.readouterr().out)[0]["revoked"] is True

    def test_providers_set_list_rotate(
        self, env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """set reads stdin and stores only a sealed copy; rotate re-seals with the new secret."""
        monkeypatch.setattr(sys, "stdin", io.StringIO("sk-canary-rotate-777\n"))
        assert main(["providers", "set", "acme", "openai"]) == 0
        assert capsys.readouterr().out.startswith("stored the openai key of acme (sha256:")
        assert main(["providers", "list", "acme", "--json"]) == 0
        out = capsys.readouterr().out
        assert "sk-canary-rotate-777" not in out
        [listed] = json.loads(out)
        assert listed["provider"] == "openai"
        assert listed["fingerprint"].startswith("sha256:")
        monkeypatch.setenv("FLEXROUTE_SECRET_KEY", "secret-b")
        monkeypatch.setenv("FLEXROUTE_SECRET_KEY_PREVIOUS", "secret-a")
        assert main(["providers", "rotate"]) == 0
        assert "re-sealed 1" in capsys.readouterr().out

        async def stored() -> str:
            store = open_store(f"sqlite:///{env}")
            try:
                found = await store.provider_key("acme", "openai")
            finally:
                await store.aclose()
            assert found is not None
            return found.sealed

        assert Sealer("secret-b").open(anyio.run(stored), "acme", "openai") == (
            "sk-canary-rotate-777"
        )

    def test_serve_refuses_a_public_bind_without_keys(
        self, env: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No flexroute keys: a non-loopback bind is refused with the reason and the fix."""
        assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
        error = capsys.readouterr().err
        assert "no flexroute keys" in error
        assert "flexroute keys create" in error
