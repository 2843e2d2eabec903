"""Dashboard sessions and CSRF tokens.

Signing in exchanges a flexroute key (or the operator's ``FLEXROUTE_ADMIN_KEY``) for a new
random session id (256 bits) in an ``HttpOnly``, ``SameSite=Strict`` cookie, ``Secure`` when
the request came over TLS (the scheme, or ``x-forwarded-proto: https`` from a proxy in
front). The store keeps only the id's SHA-256 with the organisation, the key it signed in
with and the expiry (``FLEXROUTE_DASHBOARD_SESSION_TTL``). Every sign-in makes a new id, so a
session id planted before sign-in is never promoted (no fixation); signing out deletes the
row. A session ends too when the key it signed in with is revoked (the operator's, when
``FLEXROUTE_ADMIN_KEY`` changes).

CSRF: each session's token is an HMAC of its id (session-bound; unknown without the cookie).
Before sign-in there is no session, so the sign-in form uses a double-submit token: a random
value in a ``SameSite=Strict`` cookie that the form must repeat. Every POST is checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from flexroute.ledger import Store
from flexroute.ledger.keys import KEY_PREFIX, fingerprint, hash_key
from flexroute.ledger.sessions import Session, hash_session

SESSION_COOKIE = "flexroute_session"
SIGNIN_COOKIE = "flexroute_signin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Signed:
    """A live session: its id (from the cookie) and what it may see."""

    session_id: str
    session: Session

    @property
    def csrf(self) -> str:
        return csrf_token(self.session_id)


def new_token() -> str:
    """A random id or double-submit token (256 bits)."""
    return secrets.token_urlsafe(32)


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"flexroute-dashboard-csrf", hashlib.sha256).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def cookie(name: str, value: str, *, secure: bool, max_age: int) -> tuple[str, str]:
    """A ``set-cookie`` header; ``max_age`` 0 deletes the cookie."""
    parts = [f"{name}={value}", "Path=/dashboard", "HttpOnly", "SameSite=Strict"]
    parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return ("set-cookie", "; ".join(parts))


class Sessions:
    def __init__(
        self,
        store: Store,
        admin_key: str | None,
        ttl: float,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self._admin_key = admin_key
        self.ttl = ttl
        self._clock = clock

    async def sign_in(self, key: str) -> Signed | None:
        """A new session for a valid, unrevoked flexroute key or the admin key; else None."""
        now = self._clock()
        expires = now + dt.timedelta(seconds=self.ttl)
        if self._admin_key and hmac.compare_digest(key.encode(), self._admin_key.encode()):
            session = Session(None, self._admin_print(), now, expires)
        elif key.startswith(KEY_PREFIX):
            found = await self.store.key_by_hash(hash_key(key))
            if found is None or found.revoked:
                return None
            session = Session(found.org_id, found.key_id, now, expires)
        else:
            return None
        session_id = new_token()
        await self.store.create_session(hash_session(session_id), session)
        return Signed(session_id, session)

    async def load(self, session_id: str | None) -> Signed | None:
        """The live session for a cookie's id: not expired, its key not revoked."""
        if not session_id:
            return None
        session = await self.store.session(hash_session(session_id))
        if session is None or session.expires_at <= self._clock():
            return None
        if session.operator and session.key_id != self._admin_print():
            return None  # FLEXROUTE_ADMIN_KEY was changed or removed since
        if session.org_id is not None:
            keys = {k.key_id: k for k in await self.store.keys(session.org_id)}
            key = keys.get(session.key_id or "")
            if key is None or key.revoked:
                return None
        return Signed(session_id, session)

    def _admin_print(self) -> str | None:
        """The operator session's ``key_id``: a fingerprint of the admin key it signed in
        with, so changing FLEXROUTE_ADMIN_KEY ends every operator session."""
        return None if not self._admin_key else "admin:" + fingerprint(self._admin_key)

    async def sign_out(self, session_id: str) -> None:
        await self.store.end_session(hash_session(session_id))
