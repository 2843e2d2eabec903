"""The engine: one request in a provider's wire format in, one reply out.

Both faces use it: the proxy hands it the client's HTTP request; the SDK wrapper hands it the
request the vendor SDK built. ``Engine.handle`` parses and decides (pure), runs the route
(:mod:`flexroute.routing.flex` for flex), prices the outcome and writes the ledger record
before the client sees the last byte of the answer (a whole answer's when its body is handed
over: :meth:`Reply.delivered`).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio

from flexroute import failures
from flexroute.call import Call, Gate, Reply, new_request_id
from flexroute.catalog import Catalog
from flexroute.clock import now
from flexroute.config import Settings
from flexroute.context import RequestContext, reply_headers
from flexroute.dialects import Dialect
from flexroute.dialects.base import START_WITHIN_KEYS
from flexroute.errors import (
    RequestRejected,
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
)
from flexroute.forward import Forwarder
from flexroute.intake import intake
from flexroute.ledger.base import LedgerRecord, Status, Store
from flexroute.ledger.spool import RecordSink
from flexroute.providers import Provider
from flexroute.relay import relay_stream
from flexroute.routing.adaptive import MODE_HEADER, FlexMode
from flexroute.routing.decide import Reason, Route
from flexroute.routing.flex import GaveUp, ProviderError, Started, run_flex
from flexroute.routing.streaming import StreamRefusals
from flexroute.tracing import Tracer, traced
from flexroute.upstream import (
    HOP_BY_HOP,
    Headers,
    Upstream,
    UpstreamRequest,
    UpstreamResponse,
    is_event_stream,
)
from flexroute.usage import Tier, Usage

if TYPE_CHECKING:
    from flexroute.billing.quota import Quota
    from flexroute.routing.advisor import Advisor

# Headers flexroute consumes or recomputes rather than forwarding upstream.
_DROP_UPSTREAM = HOP_BY_HOP | {"x-flex-start-within", MODE_HEADER, "accept-encoding"}

__all__ = ["Call", "Engine", "Gate", "Reply", "new_request_id"]


class Engine:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        upstream: Upstream,
        store: Store,
        *,
        clock: Callable[[], float] = now,
        on_record: Callable[[LedgerRecord], None] | None = None,
        gate: Gate | None = None,
        sink: RecordSink | None = None,
        stream_refusals: StreamRefusals | None = None,
        tracer: Tracer | None = None,
        quota: Quota | None = None,
        advisor: Advisor | None = None,
    ) -> None:
        self.settings = settings
        self.tracer = tracer  # None: traces off, nothing is paid for them (flexroute.tracing)
        self.on_record = on_record
        self.gate = gate
        self.quota = quota
        self.catalog = catalog
        self.upstream = upstream
        self.store = store
        self.sink: RecordSink = sink or store  # where records are written (see ledger/spool.py)
        # Models that refused to stream flex for this engine's callers (routing/streaming.py).
        self.stream_refusals = stream_refusals or StreamRefusals()
        self.clock = clock
        # Adaptive flex (flexroute.routing.advisor); None: every flex request spends its budget.
        self.advisor = advisor
        self.flex_mode = FlexMode.ALWAYS if advisor is None else advisor.mode
        self._forwarder = Forwarder(self)

    def base_url(self, provider: Provider) -> str:
        """The operator's base URL for ``provider`` (never one taken from a request)."""
        url: str = getattr(self.settings, provider.base_url_setting)
        return url

    async def handle(self, call: Call, provider: Provider) -> Reply:
        """Answer ``call``, a request for ``provider``'s API."""
        dialect = provider.dialect_for(call.method, call.path)
        if dialect is None:
            return await self._forwarder.forward(call, provider)
        try:
            ctx = intake(call, provider, dialect, self.catalog, self.settings, self.flex_mode)
        except RequestRejected as error:
            if self.tracer is not None:
                self.tracer.refused(call, dialect, error.status)
            return self.reject(dialect, error, call.request_id)
        if self.tracer is None:
            return await self._answer(ctx)
        ctx.trace = self.tracer.begin(ctx)
        return await traced(ctx.trace, self._answer(ctx))

    async def _answer(self, ctx: RequestContext) -> Reply:
        call, dialect = ctx.call, ctx.dialect
        try:
            if ctx.decision.billable and self.gate is not None:
                refusal = await self.gate(call)
                if refusal is not None:  # e.g. 402 for a past-due organisation
                    raise refusal
            if self.quota is not None:  # spend caps: 402 at a cap, else a reservation
                ctx.hold = await self.quota.admit(ctx)
        except RequestRejected as error:
            return self.reject(dialect, error, call.request_id)
        try:
            reply = await self._route(ctx)
        except BaseException:
            with anyio.CancelScope(shield=True):
                if ctx.log.entries and isinstance(sys.exception(), anyio.get_cancelled_exc_class()):
                    # The client went away while flexroute waited on the provider.
                    await self.record(ctx, None, None, Status.CLIENT_CLOSED, 499)
                await self._settle(ctx, None)
            raise
        if reply.stream is None and reply.deliver is None:  # else with its record, later
            await self._settle(ctx, None)
        return reply

    async def _route(self, ctx: RequestContext) -> Reply:
        if ctx.decision.route is Route.FLEX:
            ctx.route = Route.FLEX  # until it falls back: a client leaving now left flex
            return await self._flex(ctx)
        ctx.reason = ctx.reason or ctx.decision.reason
        body = self._body_for(ctx, ctx.decision.tier)
        return await self._single(ctx, body, "passthrough")

    async def _settle(self, ctx: RequestContext, record: LedgerRecord | None) -> None:
        """Release the request's place under the spend caps (once; no-op without one)."""
        if ctx.hold is not None and self.quota is not None:
            await self.quota.settle(ctx.hold, record)

    def reject(self, dialect: Dialect, error: RequestRejected, request_id: str) -> Reply:
        """flexroute's own error, in ``dialect``'s shape; ``x-should-retry`` tells the SDK
        whether a retry is safe (SPEC §8), as the providers' own headers do."""
        headers = [
            ("content-type", "application/json"),
            ("x-flexroute-request-id", request_id),
            ("x-should-retry", "true" if error.retryable else "false"),
            *error.headers.items(),
        ]
        return Reply(error.status, headers, dialect.error_body(error))

    # -- routes ---------------------------------------------------------------------------

    async def _flex(self, ctx: RequestContext) -> Reply:
        assert ctx.decision.start_within is not None
        flex_bodies = {
            True: ctx.dialect.prepare(ctx.body, tier=Tier.FLEX, stream=True, ask_usage=True)
        }
        # Built now so the fallback costs no serialising at the deadline, when many may fire.
        standard_body = self._body_for(ctx, Tier.STANDARD)
        deadline = ctx.call.received_at + ctx.decision.start_within
        watch = hold = None
        if self.advisor is not None and ctx.model is not None:
            advisor, key = self.advisor, (ctx.dialect.provider, ctx.model, ctx.call.org_id)
            plan = advisor.plan(key, deadline - self.clock(), ctx.flex_mode)
            ctx.flex_p, ctx.reason = plan.p, plan.reason
            watch = follow = advisor.follow(key, plan)
            if plan.skip:  # predicted unavailable: straight to standard, nothing waited
                ctx.route, ctx.flex_wait = Route.FALLBACK, self.clock() - ctx.call.received_at
                return await self._single(ctx, standard_body, "standard")
            deadline = min(deadline, self.clock() + plan.budget)  # never past start_within
            hold = follow.hold if ctx.flex_mode is FlexMode.ADAPTIVE else None

        def send(stream: bool) -> Awaitable[UpstreamResponse]:
            # unstreamed only for a non-streaming client whose model refused to stream
            if stream not in flex_bodies:
                flex_bodies[stream] = ctx.dialect.prepare(
                    ctx.body, tier=Tier.FLEX, stream=stream, ask_usage=False
                )
            remaining = deadline - self.clock()
            extra = ctx.dialect.attempt_headers(Tier.FLEX, remaining)
            # The total bound starts at the budget's end: it never cuts the flex wait short.
            total = remaining + self.settings.upstream_total_timeout
            request = self._request(
                ctx, flex_bodies[stream], stream=stream, extra=extra, attempt="flex"
            )
            return self.upstream.send(replace(request, total=total))

        result = await run_flex(
            send,
            ctx.dialect,
            deadline=deadline,
            wants_usage=ctx.wants_usage,
            assemble=not ctx.wants_stream,
            log=ctx.log,
            clock=self.clock,
            streaming=None
            if ctx.model is None
            else self.stream_refusals.model(ctx.dialect.provider, ctx.model),
            watch=watch,
            hold=hold,
        )
        ctx.flex_wait = self.clock() - ctx.call.received_at
        if isinstance(result, Started):
            ctx.route = Route.FLEX
            if ctx.wants_stream:
                return self._stream_reply(ctx, result.response, result)
            return await self._assembled_reply(ctx, result)
        if isinstance(result, ProviderError):
            ctx.route = Route.FLEX
            return await self._finish_error(ctx, result.status, result.headers, result.body)
        assert isinstance(result, GaveUp)
        stopped = result.reason is Reason.PREDICTED_UNAVAILABLE  # says more than the plan's
        ctx.route, ctx.reason = Route.FALLBACK, (None if stopped else ctx.reason) or result.reason
        return await self._single(ctx, standard_body, "standard")

    async def _single(self, ctx: RequestContext, body: bytes, label: str) -> Reply:
        """One upstream call, relayed as the client asked (passthrough and fallback)."""
        request = self._request(ctx, body, stream=ctx.wants_stream, attempt=label)
        began = self.clock()
        try:
            with ctx.log.left_during(label, began, self.clock):
                response = await self.upstream.send(request)
        except UpstreamConnectError as error:
            ctx.log.add(label, began, self.clock(), "unreachable", None)
            return self.reject(
                ctx.dialect, failures.unreachable(ctx.provider, error), ctx.call.request_id
            )
        except UpstreamError as error:  # it reached the provider: timed out, cut, malformed
            ctx.log.add(label, began, self.clock(), failures.attempt_outcome(error), None)
            return await self._broken_reply(ctx, error)
        if ctx.wants_stream and response.status == 200:
            if is_event_stream(response):
                ctx.log.add(label, began, self.clock(), "streaming", 200)
                return self._stream_reply(ctx, response, None)
            await response.aclose()
            ctx.log.add(label, began, self.clock(), "malformed", 200)
            kind = response.header_map.get("content-type", "no content type")
            wrong = UpstreamMalformed(f"a streamed answer came as {kind!r}, not an event stream")
            return await self._broken_reply(ctx, wrong)
        try:
            with ctx.log.left_during(label, began, self.clock, response.status):
                data = await response.read()
            facts = None
            if response.status == 200:
                facts = ctx.dialect.read_response(data, response.header_map)
        except UpstreamError as error:
            ctx.log.add(
                label, began, self.clock(), failures.attempt_outcome(error), response.status
            )
            return await self._broken_reply(ctx, error)
        finally:
            await response.aclose()
        ctx.log.add(label, began, self.clock(), "answered", response.status)
        if facts is None:
            return await self._finish_error(ctx, response.status, list(response.headers), data)
        return self._whole(ctx, facts.usage, facts.tier_served, response.headers, data)

    async def _assembled_reply(self, ctx: RequestContext, started: Started) -> Reply:
        """A non-streaming client served from the committed flex stream (or, where the
        model refused to stream, from the whole answer that arrived inside the budget)."""
        if started.whole is not None:
            await started.response.aclose()
            try:
                facts = ctx.dialect.read_response(started.whole, started.response.header_map)
            except UpstreamError as error:
                return await self._broken_reply(ctx, error)
            headers = started.response.headers
            return self._whole(ctx, facts.usage, facts.tier_served, headers, started.whole)
        observer = started.observer
        try:
            if not started.ended:
                async for chunk in started.response.aiter_bytes():
                    for event in started.decoder.feed(chunk):
                        observer.observe(event)
            if not observer.finished:
                raise UpstreamError("flex stream ended early")
            body = observer.assemble()
        except UpstreamError as error:
            return await self._broken_reply(ctx, error)
        finally:
            await started.response.aclose()
        headers = started.response.headers
        return self._whole(ctx, observer.usage, observer.tier_served, headers, body, json=True)

    def _whole(
        self,
        ctx: RequestContext,
        usage: Usage | None,
        tier_served: Tier | None,
        upstream: Headers,
        body: bytes,
        *,
        json: bool = False,
    ) -> Reply:
        """A whole answer, its headers showing the ``ok`` record's cost and fee; the record is
        written by :meth:`Reply.delivered`, as the client got it (SPEC §3: a fee only where
        the client received the answer)."""
        rate = self.settings.fee_rate
        pending = ctx.priced_record(usage, tier_served, Status.OK, 200, rate)

        async def deliver(received: bool) -> None:
            if received:  # the record its headers showed, completed now
                record = replace(pending, completed_at=dt.datetime.now(dt.UTC))
            else:
                record = ctx.priced_record(usage, tier_served, Status.CLIENT_CLOSED, 200, rate)
            with anyio.CancelScope(shield=True):
                await self._write(ctx, record)

        headers = reply_headers(ctx, upstream, pending, content_type=json)
        return Reply(200, headers, body, pending=pending, deliver=deliver)

    def _stream_reply(
        self, ctx: RequestContext, response: UpstreamResponse, started: Started | None
    ) -> Reply:
        headers = reply_headers(ctx, response.headers)
        if started is not None and started.observer.tier_served is not None:
            headers.append(("x-flexroute-tier", str(started.observer.tier_served)))
        return Reply(200, headers, stream=relay_stream(self, ctx, response, started))

    async def _broken_reply(self, ctx: RequestContext, error: UpstreamError) -> Reply:
        """The provider's answer broke off, or stalled past its bound, before any of it
        reached the client (see :mod:`flexroute.failures`)."""
        rejected = failures.broken(error)
        await self.record(ctx, None, None, failures.status_of(error), rejected.status)
        return self.reject(ctx.dialect, rejected, ctx.call.request_id)

    async def _finish_error(
        self, ctx: RequestContext, status: int, headers: Headers, body: bytes
    ) -> Reply:
        """A provider error, recorded and relayed as the provider sent it."""
        record = await self.record(ctx, None, None, Status.UPSTREAM_ERROR, status)
        return Reply(status, reply_headers(ctx, headers, record), body)

    # -- pieces ---------------------------------------------------------------------------

    def _body_for(self, ctx: RequestContext, tier: Tier | None) -> bytes:
        """The body to send: the client's own bytes when nothing needs changing."""
        needs_usage = ctx.wants_stream and ctx.decision.route is not Route.PASSTHROUGH
        has_budget = any(key in ctx.body for key in START_WITHIN_KEYS)
        untouched = tier is None and not has_budget and not needs_usage
        if untouched:
            return ctx.call.body
        return ctx.dialect.prepare(
            ctx.body, tier=tier, stream=ctx.wants_stream, ask_usage=needs_usage
        )

    def _request(
        self, ctx: RequestContext, body: bytes, *, stream: bool, attempt: str, extra: Headers = ()
    ) -> UpstreamRequest:
        # An attempt header flexroute sets replaces the client's own of that name, merged by
        # the dialect (Gemini's X-Server-Timeout: the smaller of the two deadlines).
        ours = {k: ctx.dialect.merge_attempt_header(k, v, ctx.call.header(k)) for k, v in extra}
        headers = [(k, v) for k, v in ctx.call.headers if k not in _DROP_UPSTREAM and k not in ours]
        headers += ours.items()
        headers.append(("accept-encoding", "identity"))
        if ctx.call.header("x-client-request-id") is None:
            headers.append(("x-client-request-id", ctx.call.request_id))
        target = ctx.dialect.upstream_target(ctx.call.upstream_path, ctx.call.query, stream)
        url = ctx.provider.upstream_url(self.base_url(ctx.provider), target)
        if ctx.trace is not None:  # a child span; its traceparent replaces the client's
            ctx.trace.attempt(headers, url, attempt)
        return UpstreamRequest("POST", url, headers, body)

    async def record(
        self,
        ctx: RequestContext,
        usage: Usage | None,
        tier_served: Tier | None,
        status: Status,
        http: int,
    ) -> LedgerRecord:
        record = ctx.priced_record(usage, tier_served, status, http, self.settings.fee_rate)
        await self._write(ctx, record)
        return record

    async def _write(self, ctx: RequestContext, record: LedgerRecord) -> None:
        await self.sink.record(record)  # the store, or its spool when the store is down
        await self._settle(ctx, record)
        if self.on_record is not None:
            self.on_record(record)
        if ctx.trace is not None:
            ctx.trace.end(record)
