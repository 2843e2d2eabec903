"""What the dashboard stores about a signed-in browser: a session row keyed by the SHA-256 of
its random id (the id itself lives only in the browser's HttpOnly cookie), and the latest
ledger records of an organisation for its Requests page, and each of its keys' month for
the Keys page.

A session belongs to one organisation and the key it signed in with (``key_id``), or to the
operator (``org_id`` None). Rows past ``expires_at`` are ignored and deleted whenever a new
session is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from flexroute.ledger.quota import Totals
from flexroute.money import from_pico


@dataclass(frozen=True, slots=True)
class Session:
    org_id: str | None  # None: the operator (FLEXROUTE_ADMIN_KEY)
    key_id: str | None
    created_at: dt.datetime
    expires_at: dt.datetime

    @property
    def operator(self) -> bool:
        return self.org_id is None


def hash_session(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def session_from_row(row: tuple[Any, ...]) -> Session:
    org_id, key_id, created, expires = row
    return Session(org_id, key_id, _when(created), _when(expires))


def session_row(session_hash: str, session: Session, *, iso: bool) -> tuple[Any, ...]:
    created: Any = session.created_at.isoformat() if iso else session.created_at
    expires: Any = session.expires_at.isoformat() if iso else session.expires_at
    return (session_hash, session.org_id, session.key_id, created, expires)


def _when(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


# Shared SQL (``?`` placeholders; ``flexroute.ledger._sql.pg`` converts for PostgreSQL).
INSERT_SESSION = (
    "INSERT INTO dashboard_sessions (session_hash, org_id, key_id, created_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
DELETE_EXPIRED_SESSIONS = "DELETE FROM dashboard_sessions WHERE expires_at < ?"
SESSION_BY_HASH = (
    "SELECT org_id, key_id, created_at, expires_at FROM dashboard_sessions WHERE session_hash = ?"
)
DELETE_SESSION = "DELETE FROM dashboard_sessions WHERE session_hash = ?"


def recent_query(columns: str) -> str:
    """The latest records of one organisation, newest first (index ``requests_org_received``);
    ``columns`` is the backend's select list of ``flexroute.ledger._rows.COLUMNS``."""
    return (
        f"SELECT {columns} FROM requests WHERE org_id = ? "  # noqa: S608 -- fixed columns
        "ORDER BY received_at DESC, request_id DESC LIMIT ?"
    )


# Every key's month in one pass over the organisation's month (index
# ``requests_org_received``), rather than the quota's per-key query once per key.
KEY_MONTHS = (
    "SELECT key_id, COALESCE(SUM(actual_cost_pico), 0), COALESCE(SUM(fee_pico), 0) "
    "FROM requests WHERE org_id = ? AND received_at >= ? AND key_id IS NOT NULL GROUP BY key_id"
)


def key_months_from_rows(rows: list[tuple[Any, ...]]) -> dict[str, Totals]:
    return {key_id: Totals(from_pico(int(s)), from_pico(int(f))) for key_id, s, f in rows}
