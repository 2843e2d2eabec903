"""What the engine knows about one request while it runs: shared by the engine's routes
and the forwarding of other paths."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from flexroute.call import Call
from flexroute.catalog import ModelPrices
from flexroute.dialects import Dialect
from flexroute.dialects.base import JSONDict
from flexroute.ledger.base import LedgerRecord, Status
from flexroute.providers import Provider
from flexroute.routing.adaptive import FlexMode
from flexroute.routing.decide import Decision, Reason, Route
from flexroute.routing.flex import AttemptLog
from flexroute.settle import Priced, money_headers, price
from flexroute.tracing import RequestTrace
from flexroute.upstream import HOP_BY_HOP, Headers
from flexroute.usage import Tier, Usage

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
    flex_mode: FlexMode = FlexMode.ADAPTIVE  # x-flex-mode, else the operator's default
    flex_p: float | None = None  # predicted P(flex starts within the budget) at decision time

    def priced_record(
        self, usage: Usage | None, tier_served: Tier | None, status: Status, http: int,
        fee_rate: Decimal,
    ) -> LedgerRecord:  # fmt: skip
        """The request's record for this outcome, priced: a fee only where the client
        received the answer (``ok``) from the flex tier."""
        flex = self.route is Route.FLEX and status is Status.OK
        priced = price(self.prices, usage, tier_served, flex_route=flex, fee_rate=fee_rate)
        return self.ledger_record(priced, usage, tier_served, status, http)

    def ledger_record(
        self,
        priced: Priced,
        usage: Usage | None,
        tier_served: Tier | None,
        status: Status,
        http: int,
    ) -> LedgerRecord:
        """The request's one ledger record, as it ended."""
        start_within = self.decision.start_within
        return LedgerRecord(
            request_id=self.call.request_id,
            org_id=self.call.org_id,
            key_id=self.call.key_id,
            provider=self.dialect.provider,
            endpoint=self.call.path,
            model=self.model,
            route=str(self.route),
            # an unpriced modality/cache write explains the missing costs; it wins
            reason=priced.reason or (None if self.reason is None else str(self.reason)),
            tier_requested=self.decision.tier_requested,
            tier_served=None if tier_served is None else str(tier_served),
            start_within_ms=None if start_within is None else round(start_within * 1000),
            flex_wait_ms=None if self.flex_wait is None else round(self.flex_wait * 1000),
            attempts=len(self.log.entries),
            usage=usage,
            standard_cost=priced.standard_cost,
            actual_cost=priced.actual_cost,
            saving=priced.saving,
            fee=priced.fee,
            status=status,
            http_status=http,
            received_at=self.call.received_wall,
            completed_at=dt.datetime.now(dt.UTC),
            attempt_log=tuple(self.log.entries),
            flex_probability=self.flex_p,
        )


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
