"""What the commands share: settings, an open store, ISO dates, a key from a file."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from flexroute.config import Settings
from flexroute.errors import ConfigError
from flexroute.ledger import Store, open_store


@asynccontextmanager
async def store_for(settings: Settings) -> AsyncIterator[Store]:
    store = open_store(settings.database_url)
    try:
        yield store
    finally:
        await store.aclose()


def parse_when(value: str, option: str) -> dt.datetime:
    """``2026-11-23`` or ``2026-11-23T12:00:00[+00:00]``; naive values are UTC."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not an ISO date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def key_from_file(path: Path | None) -> str | None:
    """The flexroute key in ``--key-file`` (``-``: standard input), never on the command line."""
    if path is None:
        return None
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as error:
        raise ConfigError(f"--key-file {path}: {error.strerror}") from None
    key = text.strip()
    if not key:
        raise ConfigError(f"--key-file {path} is empty")
    return key
