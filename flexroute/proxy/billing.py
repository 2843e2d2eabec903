"""flexroute's own billing endpoints: ``GET /flexroute/v1/usage`` and the Stripe webhook
(``POST /flexroute/v1/billing/stripe/webhook``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from flexroute.asgi import Receive, Scope, Send
from flexroute.commands._common import parse_when
from flexroute.commands.usage import usage_json
from flexroute.errors import ConfigError, PaymentError, RequestRejected
from flexroute.ledger import Store
from flexroute.proxy.http import ClientGone, read_body, request_headers, send_json

# (payload, Stripe-Signature header) -> what was done; raises PaymentError on a bad signature.
WebhookHandler = Callable[[bytes, str | None], Awaitable[str]]


async def usage(store: Store, scope: Scope, send: Send, org_id: str | None = None) -> None:
    """Totals by day, model and route; ``?org=`` and ``?since=`` as in ``flexroute usage``.
    ``org_id`` (gateway mode: the caller's organisation) overrides ``?org=``."""
    query = parse_qs(scope["query_string"].decode("latin-1"))
    org = org_id or query.get("org", [None])[0]
    since_text = query.get("since", [None])[0]
    try:
        since = None if since_text is None else parse_when(since_text, "since")
    except ConfigError as error:
        await _error(send, 400, str(error), "invalid_request_error")
        return
    rows = await store.usage(org, since)
    await send_json(send, 200, json.dumps(usage_json(rows)).encode())


async def stripe_webhook(
    handler: WebhookHandler | None, scope: Scope, receive: Receive, send: Send
) -> None:
    if handler is None:
        await _error(send, 404, "Stripe webhooks are off: the payment processor is not stripe.")
        return
    try:
        payload = await read_body(receive, limit=1024 * 1024)
    except ClientGone:
        return
    except RequestRejected as error:  # too large, or too slow to arrive
        body = {"error": {"message": error.message, "type": "invalid_request_error",
                          "code": error.code, "param": None}}  # fmt: skip
        await send_json(send, error.status, json.dumps(body).encode(), list(error.headers.items()))
        return
    signature = dict(request_headers(scope)).get("stripe-signature")
    try:
        done = await handler(payload, signature)
    except (PaymentError, ConfigError) as error:
        await _error(send, 400, str(error), "invalid_request_error")
        return
    await send_json(send, 200, json.dumps({"received": True, "result": done}).encode())


async def _error(send: Send, status: int, message: str, kind: str = "not_found") -> None:
    body = {"error": {"message": message, "type": kind, "code": kind, "param": None}}
    await send_json(send, status, json.dumps(body).encode())
