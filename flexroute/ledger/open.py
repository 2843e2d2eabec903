"""Which store a ``FLEXROUTE_DATABASE_URL`` names. It lives above the backends it picks, so
no backend imports the module that imports it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from flexroute.errors import ConfigError
from flexroute.ledger.base import Store

__all__ = ["open_store", "spool_path_for"]


def open_store(database_url: str) -> Store:
    """The store for a ``FLEXROUTE_DATABASE_URL``."""
    if database_url.startswith("sqlite:///"):
        from flexroute.ledger.sqlite import SQLiteStore

        return SQLiteStore(database_url.removeprefix("sqlite:///"))
    if database_url == "sqlite://:memory:":
        from flexroute.ledger.sqlite import SQLiteStore

        return SQLiteStore(":memory:")
    if database_url.startswith(("postgresql://", "postgres://")):
        from flexroute.ledger.postgres import PostgresStore

        return PostgresStore(database_url)
    raise ConfigError(
        f"FLEXROUTE_DATABASE_URL {database_url!r} is not supported: use "
        "sqlite:////absolute/path.sqlite3 or postgresql://user@host:5432/dbname"
    )


def spool_path_for(database_url: str, configured: str | None = None) -> Path:
    """The spool file for a store: ``configured``, else next to the SQLite file, else in the
    data directory, named after the database (never its password)."""
    if configured:
        return Path(configured)
    if database_url.startswith("sqlite:///"):
        return Path(database_url.removeprefix("sqlite:///") + ".spool.jsonl")
    parts = urlsplit(database_url)
    name = f"{parts.hostname}:{parts.port}{parts.path}?{parts.query}".encode()
    digest = hashlib.sha256(name).hexdigest()[:12]
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "flexroute" / f"spool-{digest}.jsonl"
