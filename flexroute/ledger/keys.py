"""What the gateway stores about access: flexroute keys (hashes only) and sealed provider keys.

A flexroute key is shown once when created and stored as its SHA-256 (the key carries 256 bits
of randomness, so a plain hash cannot be reversed by search). A provider key is stored sealed
(see :mod:`flexroute.sealing`) with a short fingerprint for humans; never in plain text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

TIERS = ("free", "elevated", "paid")
PROVIDERS = ("openai", "gemini", "anthropic")
KEY_PREFIX = "fr_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A flexroute key's record: never the key itself."""

    key_id: str
    org_id: str
    tier: str
    revoked: bool
    created_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "org_id": self.org_id,
            "tier": self.tier,
            "revoked": self.revoked,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class SealedProviderKey:
    """An organisation's provider key as stored: ``sealed`` is the AES-GCM envelope."""

    org_id: str
    provider: str
    sealed: str
    fingerprint: str
    updated_at: dt.datetime


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``; the key is ``fr_`` + 43 URL-safe characters (256 bits)."""
    return f"key_{secrets.token_hex(8)}", KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(secret: str) -> str:
    """12 hex digits of SHA-256: enough to tell keys apart, nothing to recover one from."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def key_from_row(row: tuple[Any, ...]) -> ApiKey:
    key_id, org_id, tier, revoked, created = row
    return ApiKey(key_id, org_id, tier, bool(revoked), _when(created))


def provider_key_from_row(row: tuple[Any, ...]) -> SealedProviderKey:
    org_id, provider, sealed, print_, updated = row
    return SealedProviderKey(org_id, provider, sealed, print_, _when(updated))


def _when(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


# Shared SQL (``?`` placeholders; ``flexroute.ledger._sql.pg`` converts for PostgreSQL).
KEY_COLUMNS = "key_id, org_id, tier, revoked, created_at"
INSERT_KEY = (
    "INSERT INTO api_keys (key_id, org_id, key_hash, tier, revoked, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
KEY_BY_HASH = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?"  # noqa: S608 -- fixed
KEYS_ALL = f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY org_id, created_at"  # noqa: S608
KEYS_OF = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = ? ORDER BY created_at"  # noqa: S608
REVOKE_KEY = "UPDATE api_keys SET revoked = ? WHERE key_id = ?"
ANY_KEY = "SELECT 1 FROM api_keys LIMIT 1"
PK_COLUMNS = "org_id, provider, sealed, fingerprint, updated_at"
UPSERT_PROVIDER_KEY = (
    f"INSERT INTO provider_keys ({PK_COLUMNS}) VALUES (?, ?, ?, ?, ?) "  # noqa: S608 -- fixed
    "ON CONFLICT (org_id, provider) DO UPDATE SET sealed = excluded.sealed, "
    "fingerprint = excluded.fingerprint, updated_at = excluded.updated_at"
)
PROVIDER_KEY = f"SELECT {PK_COLUMNS} FROM provider_keys WHERE org_id = ? AND provider = ?"  # noqa: S608
PROVIDER_KEYS_ALL = f"SELECT {PK_COLUMNS} FROM provider_keys ORDER BY org_id, provider"  # noqa: S608
PROVIDER_KEYS_OF = f"SELECT {PK_COLUMNS} FROM provider_keys WHERE org_id = ? ORDER BY provider"  # noqa: S608
