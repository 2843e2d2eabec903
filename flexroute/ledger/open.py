"""Which store a ``FLEXROUTE_DATABASE_URL`` names. It lives above the backends it picks, so
no backend imports the module that imports it."""

from __future__ import annotations

from flexroute.errors import ConfigError
from flexroute.ledger.base import Store

__all__ = ["open_store"]


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
