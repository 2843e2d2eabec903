"""Signing in and out of the dashboard (the flow; :mod:`.sessions` keeps the sessions).

``GET /dashboard/signin`` sets a double-submit token; ``POST`` checks it, ends any session the
browser already had, and exchanges the key for a new session (303 to the Overview, or the
operator's page). A refused key gets the form again with 401. Failed sign-ins are throttled
per client address: after ``FAILURES`` in a minute, further attempts get 429 until the minute
is over (keys are 256 bits, but an operator's admin key may be weaker). One log line per
sign-in names the organisation and key id, never the key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flexroute.dashboard import sessions as s
from flexroute.dashboard.app import PREFIX, Page, csrf_ok, forbidden
from flexroute.dashboard.http import Request, Response

log = logging.getLogger("flexroute.dashboard")
FAILURES = 10  # failed sign-ins per client address and minute
WINDOW = 60.0


class Throttle:
    """Failed attempts per address in fixed windows; in-process (a replica's own view).

    An attempt counts as failed from the moment it starts (:meth:`attempt`, before the key is
    looked up) until it succeeds (:meth:`succeeded`), so many attempts sent at once cannot all
    pass the check before the first failure is counted. At most ``max_addresses`` addresses
    are remembered: those whose window is over go first, then those below the limit."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ):
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, tuple[float, int]] = {}

    def wait(self, address: str) -> int:
        """Seconds until ``address`` may try again; 0 if it may now."""
        start, count = self._failures.get(address, (0.0, 0))
        left = start + self.window - self._clock()
        return max(1, int(left + 0.999)) if count >= self.limit and left > 0 else 0

    def attempt(self, address: str) -> int:
        """Start an attempt from ``address``: the seconds it must wait (0: it may go on, and
        the attempt is counted as failed until :meth:`succeeded`)."""
        wait = self.wait(address)
        if not wait:
            self.failed(address)
        return wait

    def succeeded(self, address: str) -> None:
        """The attempt :meth:`attempt` counted signed in: it is not a failure."""
        start, count = self._failures.get(address, (0.0, 0))
        if count > 0:
            self._failures[address] = (start, count - 1)

    def failed(self, address: str) -> None:
        now = self._clock()
        start, count = self._failures.get(address, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if address not in self._failures and len(self._failures) >= self.max_addresses:
            self._make_room(now)
        self._failures[address] = (start, count + 1)

    def _make_room(self, now: float) -> None:
        # forgetting everyone at once would let a flood of addresses reset a throttled one:
        # windows that are over go first, then addresses below the limit, oldest first
        for address in [a for a, (t, _) in self._failures.items() if now - t >= self.window]:
            del self._failures[address]
        below = (a for a, (_, count) in list(self._failures.items()) if count < self.limit)
        while len(self._failures) >= self.max_addresses:
            del self._failures[next(below, None) or next(iter(self._failures))]


class SignIn:
    def __init__(self, page: Page, sessions: s.Sessions, throttle: Throttle | None = None):
        self.page = page
        self.sessions = sessions
        self.throttle = throttle or Throttle(FAILURES, WINDOW)

    async def handle(self, request: Request) -> Response:
        if request.method == "GET":
            return self._form(request, 200, None)
        if request.method != "POST":
            return self.page.render("error.html", 405, message="Method not allowed.", signed=None)
        expected = request.cookies.get(s.SIGNIN_COOKIE, "")
        if not expected or not s.same_token(expected, request.form.get(s.CSRF_FIELD)):
            return forbidden(self.page, None)
        wait = self.throttle.attempt(request.client)  # counted before the first await
        if wait:
            message = f"Too many failed sign-ins from your address: try again in {wait} s."
            response = self._form(request, 429, message)
            response.headers.append(("retry-after", str(wait)))
            return response
        old = await self.sessions.load(request.cookies.get(s.SESSION_COOKIE))
        if old is not None:  # signing in again replaces the session, never adds one
            await self.sessions.sign_out(old.session_id)
        signed = await self.sessions.sign_in(request.field("key"))
        if signed is None:
            log.warning("flexroute: dashboard sign-in refused from %s (unknown or revoked "
                        "key)", request.client)  # fmt: skip
            return self._form(
                request, 401, "That key is not a valid flexroute key (or it was revoked)."
            )
        self.throttle.succeeded(request.client)
        if signed.session.operator:  # who, never the key (nor the admin key's fingerprint)
            log.info("flexroute: dashboard sign-in: the operator")
        else:
            log.info("flexroute: dashboard sign-in: %s (%s)", signed.session.org_id,
                     signed.session.key_id)  # fmt: skip
        where = f"{PREFIX}/operator" if signed.session.operator else f"{PREFIX}/"
        response = Response.redirect(where)
        secure, max_age = request.tls, int(self.sessions.ttl)
        response.headers.append(
            s.cookie(s.SESSION_COOKIE, signed.session_id, secure=secure, max_age=max_age)
        )
        response.headers.append(s.cookie(s.SIGNIN_COOKIE, "", secure=secure, max_age=0))
        return response

    def _form(self, request: Request, status: int, error: str | None) -> Response:
        token = s.new_token()
        response = self.page.render("signin.html", status, csrf=token, error=error, signed=None)
        response.headers.append(s.cookie(s.SIGNIN_COOKIE, token, secure=request.tls, max_age=3600))
        return response

    async def sign_out(self, request: Request, signed: s.Signed | None) -> Response:
        if signed is None:
            return Response.redirect(f"{PREFIX}/signin")
        if not csrf_ok(request, signed.csrf):
            return forbidden(self.page, signed)
        await self.sessions.sign_out(signed.session_id)
        response = Response.redirect(f"{PREFIX}/signin")
        response.headers.append(s.cookie(s.SESSION_COOKIE, "", secure=request.tls, max_age=0))
        return response
