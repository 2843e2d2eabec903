"""What the engine knows about one request while it runs: shared by the engine's routes
and the forwarding of other paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flexroute.call import Call
from flexroute.catalog import ModelPrices
from flexroute.dialects import Dialect
from flexroute.dialects.base import JSONDict
from flexroute.ledger.base import LedgerRecord
from flexroute.providers import Provider
from flexroute.routing.decide import Decision, Reason, Route
from flexroute.routing.flex import AttemptLog
from flexroute.settle import money_headers
from flexroute.tracing import RequestTrace
from flexroute.upstream import HOP_BY_HOP, Headers

if TYPE_CHECKING:
    from flexroute.billing.quota import Hold

__all__ = ["RequestContext", "reply_headers"]

# Response headers never relayed as-is to the client.
_DROP_DOWNSTREAM = HOP_BY_HOP | {"content-encoding", "date", "server"}


@dataclass(slots=True)
class RequestContext:
    call: Call
    provider: Provider
    dialect: Dialect
    body: JSONDict
    model: str | None
    prices: ModelPrices | None
    decision: Decision
    wants_stream: bool
    wants_usage: bool
    log: AttemptLog
    route: Route = Route.PASSTHROUGH
    reason: Reason | None = None
    flex_wait: float | None = None
    trace: RequestTrace | None = None  # set only when traces are on (flexroute.tracing)
    hold: Hold | None = None  # its place under the spend caps (flexroute.billing.quota)


def reply_headers(
    ctx: RequestContext,
    upstream_headers: Headers,
    record: LedgerRecord | None = None,
    *,
    content_type: bool = False,
) -> list[tuple[str, str]]:
    """The provider's response headers as the client gets them, with ``x-flexroute-*``
    (SPEC §5): the money figures and the tier served where the record is already written."""
    out = [
        (k, v)
        for k, v in upstream_headers
        if k not in _DROP_DOWNSTREAM and not (content_type and k == "content-type")
    ]
    if content_type:
        out.append(("content-type", "application/json"))
    out += [
        ("x-flexroute-request-id", ctx.call.request_id),
        ("x-flexroute-route", str(ctx.route)),
    ]
    if ctx.reason is not None:
        out.append(("x-flexroute-reason", str(ctx.reason)))
    if ctx.flex_wait is not None:
        out.append(("x-flexroute-flex-wait-ms", str(round(ctx.flex_wait * 1000))))
    if record is not None:
        if record.tier_served is not None:
            out.append(("x-flexroute-tier", record.tier_served))
        out += money_headers(record)
    return out
