"""The dashboard's HTTP plumbing over plain ASGI: a parsed request, a response, and the
security headers every page carries.

Every response gets a Content-Security-Policy without inline script (the pages' JavaScript is
``/dashboard/static/dashboard.js``; Stripe.js is allowed from its configured origin only),
``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` against clickjacking, ``nosniff``,
``Referrer-Policy: same-origin`` and ``Cache-Control: no-store`` (a page may show a new key
once; no cache keeps it).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio

from flexroute.asgi import Receive, Scope, Send

FORM_LIMIT = 64 * 1024  # a sign-in or caps form is a few hundred bytes


class BodyTooLarge(Exception):  # noqa: N818 -- an outcome: answered 413 beside
    pass


class BodyTooSlow(Exception):  # noqa: N818 -- an outcome: answered 408 beside
    """The form did not all arrive within the body bound (a slowloris): 408, connection closed."""


@dataclass(slots=True)
class Request:
    method: str
    path: str  # below /dashboard, e.g. "/billing"
    query: dict[str, list[str]]
    headers: dict[str, str]
    cookies: dict[str, str]
    tls: bool
    client: str  # the peer's address (a proxy in front: the proxy's)
    form: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    params: tuple[str, ...] = ()  # the route pattern's groups, e.g. a request id

    def field(self, name: str) -> str:
        return self.form.get(name, "").strip()


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str) -> Response:
        """303 See Other: the browser follows it with a GET (post/redirect/get)."""
        return cls(303, b"", "text/plain; charset=utf-8", [("location", location)])

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        return cls(status, json.dumps(data).encode(), "application/json")


async def read_request(
    scope: Scope, receive: Receive, prefix: str, within: float = 60.0
) -> Request:
    """The request; a POST's form must all arrive within ``within`` seconds
    (``FLEXROUTE_CLIENT_BODY_TIMEOUT``), else :class:`BodyTooSlow`."""
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        headers[key.decode("latin-1").lower()] = value.decode("latin-1")
    cookies: dict[str, str] = {}
    if "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):  # a malformed cookie header is no cookie
            jar.load(headers["cookie"])
        cookies = {name: morsel.value for name, morsel in jar.items()}
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    request = Request(
        method=scope["method"],
        path=scope["path"].removeprefix(prefix) or "/",
        query=parse_qs(scope["query_string"].decode("latin-1")),
        headers=headers,
        cookies=cookies,
        tls=scope.get("scheme") == "https" or forwarded == "https",
        client=str((scope.get("client") or ("-",))[0]),
    )
    if request.method == "POST":
        try:
            with anyio.fail_after(within):
                request.body = await _read_body(receive)
        except TimeoutError:
            raise BodyTooSlow from None
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            parsed = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
            request.form = {name: values[0] for name, values in parsed.items()}
    return request


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > FORM_LIMIT:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


# What Stripe.js itself needs beside its own origin (Stripe's CSP guide): 3-D Secure frames.
_STRIPE_FRAMES = {"https://js.stripe.com": ("https://hooks.stripe.com",)}


def policy(script_origins: tuple[str, ...], connect_origins: tuple[str, ...]) -> str:
    """The Content-Security-Policy: our own files, plus Stripe.js where the card form is."""
    scripts = " ".join(("'self'", *script_origins))
    connects = " ".join(("'self'", *connect_origins))
    extra = tuple(f for origin in script_origins for f in _STRIPE_FRAMES.get(origin, ()))
    frames = " ".join((*script_origins, *extra)) or "'none'"
    return (
        "default-src 'none'; "
        f"script-src {scripts}; "
        "style-src 'self'; "
        "img-src 'self' data:; "
        f"connect-src {connects}; "
        f"frame-src {frames}; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def send_response(send: Send, response: Response, csp: str) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("content-security-policy", csp),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        *response.headers,
    ]
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": response.body})
