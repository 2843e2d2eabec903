"""The OpenTelemetry tracer (extra ``flexroute[otel]``): one span per request, one child per
upstream attempt, GenAI semantic-convention attributes. See :mod:`flexroute.tracing`.

The request's span (kind SERVER in the proxy, INTERNAL in the SDK wrapper) is named
``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat gpt-5-mini``) and continues the
client's W3C ``traceparent`` (or, in the wrapper, the caller's current span). Each attempt is
a CLIENT child of the same name, opened as the attempt is sent so the provider receives its
``traceparent``; when the ledger record is written the attempts are closed at the times the
attempt log gives and the request's span gets the record's facts:

* GenAI: ``gen_ai.operation.name``, ``gen_ai.provider.name`` (and the older ``gen_ai.system``
  for backends that still read it), ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``; OpenAI's ``openai.request.service_tier`` and
  ``openai.response.service_tier`` (wire values: ``flex``, ``default``); ``error.type``.
* flexroute: ``flexroute.request_id``, ``.org``, ``.route``, ``.reason``, ``.status``,
  ``.tier.requested``, ``.tier.served``, ``.start_within_ms``, ``.flex_wait_ms``,
  ``.attempts``, ``.cost_usd``, ``.standard_cost_usd``, ``.saving_usd``, ``.fee_usd``;
  on attempts ``flexroute.attempt.tier``, ``.outcome``, ``.billed``, ``.stream``.

Never a key, a prompt or an answer: only the record's fields, which hold none.

Exporters come from ``OTEL_TRACES_EXPORTER`` (default ``otlp`` when an OTLP endpoint is set):
``otlp`` over ``http/protobuf`` (the default protocol; ``grpc`` needs
``opentelemetry-exporter-otlp-proto-grpc``) and ``console``; every other ``OTEL_*`` variable
(endpoint, headers, sampler, resource, batch sizes) is read by the SDK itself.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flexroute import __version__
from flexroute.errors import ConfigError
from flexroute.money import format_usd
from flexroute.providers import by_name
from flexroute.usage import Tier

if TYPE_CHECKING:
    from flexroute.call import Call
    from flexroute.context import RequestContext
    from flexroute.dialects.base import Dialect
    from flexroute.ledger.base import LedgerRecord

__all__ = ["OtelTracer", "tracer_from_env"]

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_SERVED = frozenset({"started", "streaming", "answered"})
_KINDS = {"server": SpanKind.SERVER, "internal": SpanKind.INTERNAL}
_FLEX_ATTEMPT = "flex"


class OtelTracer:
    """Spans for the engine's requests, made by ``provider`` (owned: closed by ``aclose``)."""

    def __init__(
        self, provider: TracerProvider, *, kind: str = "server", description: str = "traces"
    ) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("flexroute", __version__)
        self.kind = _KINDS[kind]
        self.description = description

    def begin(self, ctx: RequestContext) -> _RequestTrace:
        # One time axis for the request and its attempts: the wall clock at receipt, then
        # the engine's monotonic clock (the attempt log's) from there.
        start = time.time_ns() - round((anyio.current_time() - ctx.call.received_at) * 1e9)
        provider = by_name(ctx.dialect.provider)
        base = {
            "gen_ai.operation.name": ctx.dialect.operation,
            "gen_ai.provider.name": provider.semconv_name or provider.name,
            "gen_ai.system": provider.semconv_name or provider.name,
        }
        if ctx.model is not None:
            base["gen_ai.request.model"] = ctx.model
        name = _span_name(ctx.dialect, ctx.model)
        attributes: dict[str, Any] = {
            **base,
            "http.request.method": ctx.call.method,
            "url.path": ctx.call.path,
            "flexroute.request_id": ctx.call.request_id,
        }
        requested = ctx.decision.tier_requested
        if requested is not None:
            attributes["flexroute.tier.requested"] = requested
            if provider.semconv_tier_namespace:
                attributes[f"{provider.semconv_tier_namespace}.request.service_tier"] = requested
        span = self.tracer.start_span(
            name, _parent(ctx.call.headers), self.kind, attributes, start_time=start
        )
        return _RequestTrace(self, ctx, span, start, name, base)

    def refused(self, call: Call, dialect: Dialect, status: int) -> None:
        provider = by_name(dialect.provider)
        span = self.tracer.start_span(
            dialect.operation,
            _parent(call.headers),
            self.kind,
            {
                "gen_ai.operation.name": dialect.operation,
                "gen_ai.provider.name": provider.semconv_name or provider.name,
                "http.request.method": call.method,
                "url.path": call.path,
                "http.response.status_code": status,
                "flexroute.request_id": call.request_id,
                "error.type": str(status),
            },
            start_time=_wall_ns(call),
        )
        span.set_status(Status(StatusCode.ERROR, f"refused with HTTP {status}"))
        span.end()

    async def aclose(self) -> None:
        """Flush and stop in a thread, for at most 5 s (an unreachable collector must not
        hold the shutdown)."""
        with anyio.move_on_after(5):
            await anyio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)


class _RequestTrace:
    def __init__(
        self,
        tracer: OtelTracer,
        ctx: RequestContext,
        span: Span,
        start_ns: int,
        name: str,
        base: dict[str, str],
    ) -> None:
        self.tracer, self.ctx, self.span, self.start_ns = tracer, ctx, span, start_ns
        self.name, self.base = name, base
        self.attempts: list[tuple[Span, int]] = []  # each attempt's span and start
        self.ended = False

    def attempt(self, headers: list[tuple[str, str]], url: str, tier: str) -> None:
        attributes: dict[str, Any] = {**self.base, "flexroute.attempt.tier": tier}
        sent = self._tier_sent(tier)
        namespace = by_name(self.ctx.dialect.provider).semconv_tier_namespace
        if namespace and sent is not None:
            attributes[f"{namespace}.request.service_tier"] = sent
        parts = urlsplit(url)
        if parts.hostname:
            attributes["server.address"] = parts.hostname
            attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        began = self._now()
        child = self.tracer.tracer.start_span(
            self.name, set_span_in_context(self.span), SpanKind.CLIENT, attributes, start_time=began
        )
        self.attempts.append((child, began))
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, set_span_in_context(child))
        headers[:] = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
        headers.extend(carrier.items())

    def _now(self) -> int:
        return self.start_ns + round((anyio.current_time() - self.ctx.call.received_at) * 1e9)

    def _tier_sent(self, attempt: str) -> str | None:
        """The tier this attempt asks for, as the API writes it."""
        wire = self.ctx.dialect.wire_tiers
        if attempt in (Tier.FLEX, Tier.STANDARD):
            return wire[Tier(attempt)]
        tier = self.ctx.decision.tier
        return wire[tier] if tier is not None else self.ctx.decision.tier_requested

    def end(self, record: LedgerRecord) -> None:
        if self.ended:
            return
        self.ended = True
        provider = by_name(record.provider)
        namespace = provider.semconv_tier_namespace
        entries = list(record.attempt_log)
        for index, (child, began) in enumerate(self.attempts):
            entry = entries[index] if index < len(entries) else None
            self._end_attempt(child, began, entry, record, namespace)
        span = self.span
        span.set_attributes(dict(_record_attributes(record, self.ctx.dialect, namespace)))
        if record.status != "ok":
            span.set_attribute("error.type", record.status)
            failed = f"{record.status} (HTTP {record.http_status})"
            span.set_status(Status(StatusCode.ERROR, failed))
        span.end(end_time=self._now())

    def _end_attempt(
        self,
        child: Span,
        began: int,
        entry: Mapping[str, object] | None,
        record: LedgerRecord,
        namespace: str | None,
    ) -> None:
        if entry is None:  # sent, then the request was cancelled before the attempt ended
            child.set_attribute("flexroute.attempt.outcome", "cancelled")
            child.end(end_time=self._now())
            return
        outcome = str(entry.get("outcome"))
        child.set_attribute("flexroute.attempt.outcome", outcome)
        for key in ("billed", "stream", "why"):
            value = entry.get(key)
            if isinstance(value, bool | str):
                child.set_attribute(f"flexroute.attempt.{key}", value)
        status = entry.get("status")
        if isinstance(status, int):
            child.set_attribute("http.response.status_code", status)
        if outcome in _SERVED and record.status == "ok":
            child.set_attributes(dict(_usage_attributes(record)))
            served = _wire_tier(self.ctx.dialect, record.tier_served)
            if namespace and served is not None:
                child.set_attribute(f"{namespace}.response.service_tier", served)
        elif outcome not in _SERVED:
            child.set_attribute("error.type", outcome)
            child.set_status(Status(StatusCode.ERROR, outcome))
        ended = entry.get("ended_ms")
        end = self._now()
        if isinstance(ended, int | float):
            end = self.start_ns + round(float(ended) * 1_000_000)
        child.end(end_time=max(end, began))

    def close(self, http_status: int | None, error: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        now = self._now()
        for child, _ in self.attempts:
            child.end(end_time=now)
        span = self.span
        if http_status is not None:
            span.set_attribute("http.response.status_code", http_status)
            span.set_attribute("flexroute.route", str(self.ctx.route))
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        elif http_status is not None and http_status >= 400:
            span.set_attribute("error.type", str(http_status))
            span.set_status(Status(StatusCode.ERROR, f"HTTP {http_status}"))
        span.end(end_time=now)


def _record_attributes(
    record: LedgerRecord, dialect: Dialect, namespace: str | None
) -> Iterator[tuple[str, Any]]:
    yield "http.response.status_code", record.http_status
    yield "flexroute.route", record.route
    yield "flexroute.status", record.status
    yield "flexroute.org", record.org_id
    yield "flexroute.attempts", record.attempts
    optional = {
        "flexroute.reason": record.reason,
        "flexroute.tier.served": record.tier_served,
        "flexroute.start_within_ms": record.start_within_ms,
        "flexroute.flex_wait_ms": record.flex_wait_ms,
        "flexroute.key_id": record.key_id,
    }
    yield from ((k, v) for k, v in optional.items() if v is not None)
    yield from _usage_attributes(record)
    served = _wire_tier(dialect, record.tier_served)
    if namespace and served is not None:
        yield f"{namespace}.response.service_tier", served
    for name in ("actual_cost", "standard_cost"):
        amount = getattr(record, name)
        if amount is not None:
            yield f"flexroute.{name.removeprefix('actual_')}_usd", format_usd(amount)
    yield "flexroute.saving_usd", format_usd(record.saving)
    yield "flexroute.fee_usd", format_usd(record.fee)


def _usage_attributes(record: LedgerRecord) -> Iterator[tuple[str, int]]:
    if record.usage is not None:
        yield "gen_ai.usage.input_tokens", record.usage.input_tokens
        yield "gen_ai.usage.output_tokens", record.usage.output_tokens


def _wire_tier(dialect: Dialect, tier: str | None) -> str | None:
    """flexroute's tier name as the provider's API writes it (OpenAI: standard -> default)."""
    if tier is None:
        return None
    try:
        return dialect.wire_tiers.get(Tier(tier), tier)
    except ValueError:
        return tier


def _span_name(dialect: Dialect, model: str | None) -> str:
    return f"{dialect.operation} {model}" if model else dialect.operation


def _parent(headers: Sequence[tuple[str, str]]) -> Context | None:
    """The client's W3C trace context, if it sent one; else None (the current context)."""
    carrier = {k: v for k, v in headers if k in _TRACE_HEADERS}
    return _PROPAGATOR.extract(carrier) if carrier else None


def _ns(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1_000_000_000)


def _wall_ns(call: Call) -> int:
    """When the request was received, on the wall clock, in ns."""
    return _ns(call.received_wall)


# -- built from the environment ----------------------------------------------------------


def tracer_from_env(
    env: Mapping[str, str], exporters: Sequence[str], *, kind: str = "server"
) -> OtelTracer:
    """The tracer ``OTEL_*`` configures: its resource, sampler and exporters."""
    made = [_exporter(name, env) for name in exporters]
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "flexroute"}))
    provider = TracerProvider(resource=resource)
    for exporter, _ in made:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    description = ", ".join(text for _, text in made)
    return OtelTracer(provider, kind=kind, description=description)


def _exporter(name: str, env: Mapping[str, str]) -> tuple[SpanExporter, str]:
    if name == "console":
        return ConsoleSpanExporter(), "console"
    if name != "otlp":
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={name!r} is not an exporter flexroute can build: use "
            "otlp or console (or none, or unset it, to turn traces off)"
        )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "the default localhost endpoint"
    )
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), f"otlp http/protobuf to {_no_credentials(endpoint)}"
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                "pip install opentelemetry-exporter-otlp-proto-grpc (or use http/protobuf)"
            ) from None
        return GrpcExporter(), f"otlp grpc to {_no_credentials(endpoint)}"
    raise ConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: use http/protobuf "
        "(the default) or grpc"
    )


def _no_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        return url.replace(f"{parts.netloc.rsplit('@', 1)[0]}@", "***@", 1)
    return url
