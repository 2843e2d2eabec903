"""The dashboard as a plain ASGI app under ``/dashboard/`` (SPEC §8, issue 15).

:class:`~flexroute.proxy.app.ProxyApp` hands it every request whose path starts with
``/dashboard`` from the same prefix test that picks flexroute's own API, so provider traffic
never reaches this module. Here: the route table, the session and CSRF checks that every
route goes through, and the security headers on every response (:mod:`.http`).

Routes that need a session redirect to the sign-in page without one; an operator session
sees only the operator page, an organisation's session only its own organisation's data.
Every POST must carry the session's CSRF token (a form field, or ``x-csrf-token`` for the
card form's JSON call); otherwise 403 and nothing changes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import jinja2

from flexroute.asgi import Receive, Scope, Send
from flexroute.billing.gate import BillingGate
from flexroute.billing.processors import CENT
from flexroute.config import Settings
from flexroute.dashboard import sessions as s
from flexroute.dashboard.http import (
    BodyTooLarge,
    BodyTooSlow,
    Request,
    Response,
    origin_of,
    policy,
    read_request,
    send_response,
)
from flexroute.dashboard.stripe_setup import CardSetup
from flexroute.ledger import Store

PREFIX = "/dashboard"
log = logging.getLogger("flexroute.dashboard")

Handler = Callable[["Page", Request, s.Signed], Awaitable[Response]]
_STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    operator: bool = False  # the operator's route (else an organisation's)


class Page:
    """What handlers share: the store, the templates, the clock, and the hooks that make a
    change take effect at once in this process (the billing gate's and the key cache's)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        gate: BillingGate | None,
        forget_key: Callable[[str], None],
        cards: CardSetup | None,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.settings = settings
        self.store = store
        self.gate = gate
        self.forget_key = forget_key
        self.cards = cards
        self.clock = clock
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("flexroute.dashboard", "templates"),
            autoescape=True,
        )
        self.templates.filters["usd"] = usd
        self.templates.filters["pct"] = pct
        self.templates.filters["amount"] = amount

    def render(self, name: str, status: int = 200, **context: Any) -> Response:
        html = self.templates.get_template(name).render(settings=self.settings, **context)
        return Response(status, html.encode())

    def forget_org(self, org_id: str) -> None:
        if self.gate is not None:
            self.gate.forget(org_id)


def usd(amount: Any) -> str:
    """Dollars for people: cents, or up to six decimals for an amount under a cent (a
    request's cost is often a few millionths of a dollar)."""
    if amount is None:
        return "—"
    if amount != 0 and abs(amount) < CENT:
        text = f"{amount:.6f}".rstrip("0")
        return f"${text}0" if text.endswith(".") else f"${text}"
    return f"${amount:,.2f}"


def amount(value: Any) -> str:
    """A cap as a form shows it: ``12.5``, or empty for none."""
    return "" if value is None else format(value.normalize(), "f")


def pct(share: Any) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


class SignInFlow(Protocol):
    """:class:`flexroute.dashboard.signin.SignIn`, which builds on this module."""

    async def handle(self, request: Request) -> Response: ...

    async def sign_out(self, request: Request, signed: s.Signed | None) -> Response: ...


class Dashboard:
    def __init__(
        self, page: Page, routes: list[Route], sessions: s.Sessions, signin: SignInFlow
    ) -> None:
        self.page = page
        self.routes = routes
        self.sessions = sessions
        self.signin = signin
        js = page.settings.stripe_js_url
        stripe = (origin_of(js),) if page.cards is not None else ()
        api = (origin_of(page.settings.stripe_api_base or "https://api.stripe.com"),)
        self.csp = policy(stripe, stripe + api if stripe else ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            within = self.page.settings.client_body_timeout
            request = await read_request(scope, receive, PREFIX, within)
        except BodyTooLarge:
            await send_response(send, Response(413, b"Form too large."), self.csp)
            return
        except BodyTooSlow:  # closed, so a client still dribbling the form cannot hold it
            slow = Response(408, b"Form not received in time.", headers=[("connection", "close")])
            await send_response(send, slow, self.csp)
            return
        try:
            response = await self._dispatch(request)
        except Exception:  # one page's failure is a 500 page, never a traceback to the browser
            log.exception("flexroute: dashboard page %s failed", request.path)
            response = self.page.render(
                "error.html",
                500,
                message="Something went wrong; the server log says what.",
                signed=None,
            )
        await send_response(send, response, self.csp)

    async def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/static/") and request.method == "GET":
            return _static(path.removeprefix("/static/"))
        if path == "/signin":
            return await self.signin.handle(request)
        signed = await self.sessions.load(request.cookies.get(s.SESSION_COOKIE))
        if path == "/signout" and request.method == "POST":
            return await self.signin.sign_out(request, signed)
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is None or route.method != request.method:
                continue
            if signed is None:
                return Response.redirect(f"{PREFIX}/signin")
            if route.operator != signed.session.operator:
                return Response.redirect(
                    f"{PREFIX}/operator" if signed.session.operator else f"{PREFIX}/"
                )
            if request.method == "POST" and not csrf_ok(request, signed.csrf):
                return self._forbidden(signed)
            request.params = match.groups()
            return await route.handler(self.page, request, signed)
        return self.page.render("error.html", 404, message="No such page.", signed=signed)

    def _forbidden(self, signed: s.Signed | None) -> Response:
        return forbidden(self.page, signed)


def csrf_ok(request: Request, expected: str) -> bool:
    """The session's token came back, as a form field or (JSON calls) a header."""
    given = request.form.get(s.CSRF_FIELD) or request.headers.get(s.CSRF_HEADER)
    return s.same_token(expected, given)


def forbidden(page: Page, signed: s.Signed | None) -> Response:
    return page.render(
        "error.html",
        403,
        message="This form has expired or did not come from this dashboard (CSRF check "
        "failed). Reload the page and try again.",
        signed=signed,
    )


def _static(name: str) -> Response:
    kind = _STATIC.get(name)
    if kind is None:
        return Response(404, b"Not found.", "text/plain; charset=utf-8")
    body = resources.files("flexroute.dashboard").joinpath("static", name).read_bytes()
    return Response(200, body, kind)
