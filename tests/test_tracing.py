"""Traces with OpenTelemetry (issue 12, item 5): the real openai SDK through the proxy to the
emulator, spans caught by the SDK's in-memory exporter."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import flexroute
from flexroute.errors import ConfigError
from flexroute.otel import OtelTracer, tracer_from_env
from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from flexroute.tracing import tracing_from_env, tracing_requested
from tests.conftest import Proxy, attempts, make_settings
from tests.test_proxy_openai import MESSAGES

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@dataclass
class Traced:
    proxy: Proxy
    exporter: InMemorySpanExporter

    def spans(self, request_id: str, count: int) -> list[ReadableSpan]:
        """The request's spans once ``count`` have ended (server span first)."""
        deadline = time.monotonic() + 10
        while True:
            mine = self._of(request_id)
            if len(mine) >= count or time.monotonic() > deadline:
                return sorted(mine, key=lambda s: (s.kind is not SpanKind.SERVER, s.start_time))
            time.sleep(0.01)

    def _of(self, request_id: str) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        server = [s for s in spans if attr(s, "flexroute.request_id") == request_id]
        ids = {s.context.span_id for s in server}
        return server + [s for s in spans if s.parent is not None and s.parent.span_id in ids]


def chat(client: Any, emulator: str, traceparent: str | None = None, **kwargs: Any) -> Any:
    """A raw chat call steering the emulator, with the client's own traceparent if given."""
    headers = {"x-emulator": emulator}
    if traceparent is not None:
        headers["traceparent"] = traceparent
    return client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=MESSAGES, extra_headers=headers, **kwargs
    )


def attr(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


@pytest.fixture
def traced(tmp_path: Path, emulator: Any) -> Iterator[Traced]:
    """The proxy with a tracer that hands every ended span to an in-memory exporter."""
    emulator.reset()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = make_settings(tmp_path, emulator.base_url)
    app = create_app(settings, tracer=OtelTracer(provider))
    with serve_in_thread(app) as url:
        yield Traced(Proxy(url, settings), exporter)


def children(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.CLIENT]


class TestSpans:
    def test_a_flex_request_is_one_server_span_with_one_attempt_continuing_the_trace(
        self, traced: Traced, emulator: Any
    ) -> None:
        """The client's traceparent is continued; the attempt's own goes to the provider."""
        raw = chat(
            traced.proxy.client(),
            "flex_queue=0.05;prompt_tokens=1000",
            TRACEPARENT,
            extra_body={"start_within": "2s"},
        )
        request_id = raw.headers["x-flexroute-request-id"]
        server, attempt = traced.spans(request_id, 2)
        assert server.name == "chat gpt-5-mini"
        assert server.kind is SpanKind.SERVER
        assert server.parent is not None
        assert server.parent.is_remote
        assert (f"{server.context.trace_id:032x}", f"{server.parent.span_id:016x}") == (
            TRACE_ID, PARENT_ID
        )  # fmt: skip
        assert attempt.parent is not None
        assert attempt.parent.span_id == server.context.span_id
        assert (attempt.name, attempt.kind) == ("chat gpt-5-mini", SpanKind.CLIENT)
        record = traced.proxy.record(request_id)
        expected = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-5-mini",
            "gen_ai.usage.input_tokens": record["usage"]["input_tokens"],
            "gen_ai.usage.output_tokens": record["usage"]["output_tokens"],
            "openai.response.service_tier": "flex",
            "flexroute.route": "flex",
            "flexroute.tier.served": "flex",
            "flexroute.flex_wait_ms": record["flex_wait_ms"],
            "flexroute.fee_usd": raw.headers["x-flexroute-fee-usd"],
            "flexroute.saving_usd": raw.headers["x-flexroute-saving-usd"],
            "flexroute.cost_usd": raw.headers["x-flexroute-cost-usd"],
            "http.response.status_code": 200,
        }
        assert {k: attr(server, k) for k in expected} == expected
        assert record["usage"]["input_tokens"] == 1000
        assert attr(attempt, "flexroute.attempt.outcome") == "started"
        assert attr(attempt, "openai.request.service_tier") == "flex"
        assert attr(attempt, "gen_ai.usage.output_tokens") == record["usage"]["output_tokens"]
        assert server.status.status_code is StatusCode.UNSET
        # the provider saw the attempt's span as its parent, in the client's trace
        [seen] = attempts(emulator, request_id)
        assert seen["headers"]["traceparent"] == (
            f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"
        )
        assert server.start_time is not None
        assert attempt.start_time is not None
        assert server.end_time is not None
        assert attempt.end_time is not None
        assert server.start_time <= attempt.start_time <= attempt.end_time <= server.end_time

    def test_a_fallback_has_a_flex_child_and_a_standard_child(
        self, traced: Traced, emulator: Any
    ) -> None:
        """Flex past its deadline, then standard: two attempt spans, each sent upstream."""
        raw = chat(traced.proxy.client(), "flex_queue=5", extra_body={"start_within": "300ms"})
        request_id = raw.headers["x-flexroute-request-id"]
        server, *tried = traced.spans(request_id, 3)
        flex, standard = children([server, *tried])
        assert (attr(server, "flexroute.route"), attr(server, "flexroute.reason")) == (
            "fallback", raw.headers["x-flexroute-reason"]
        )  # fmt: skip
        assert attr(server, "flexroute.attempts") == 2
        assert attr(flex, "flexroute.attempt.tier") == "flex"
        assert flex.status.status_code is StatusCode.ERROR
        assert attr(flex, "gen_ai.usage.output_tokens") is None  # nothing came from flex
        assert attr(standard, "flexroute.attempt.tier") == "standard"
        assert attr(standard, "flexroute.attempt.outcome") == "answered"
        assert attr(standard, "openai.request.service_tier") == "default"
        assert attr(standard, "openai.response.service_tier") == "default"
        assert attr(standard, "gen_ai.usage.output_tokens") > 0
        assert flex.end_time is not None
        assert standard.start_time is not None
        assert flex.end_time <= standard.start_time + 5_000_000  # 5 ms of clock granularity
        # no traceparent from the client: a new trace, rooted at flexroute's span
        assert server.parent is None
        sent = [a["headers"]["traceparent"].rsplit("-", 1) for a in attempts(emulator, request_id)]
        assert [context for context, _ in sent] == [
            f"00-{server.context.trace_id:032x}-{span.context.span_id:016x}"
            for span in (flex, standard)
        ]
        assert all(int(flags, 16) & 1 for _, flags in sent)  # sampled

    def test_a_refused_flex_attempt_retried_is_one_child_each(self, traced: Traced) -> None:
        """A 429 refusal and its retry inside the budget: two flex children, the second served."""
        raw = chat(
            traced.proxy.client(), "flex_refuse=1;retry_after=0.01",
            extra_body={"start_within": "5s"},
        )  # fmt: skip
        server, *tried = traced.spans(raw.headers["x-flexroute-request-id"], 3)
        refused, served = children([server, *tried])
        assert attr(refused, "flexroute.attempt.outcome") == "refused"
        assert attr(refused, "http.response.status_code") == 429
        assert attr(served, "flexroute.attempt.outcome") == "started"
        assert attr(server, "flexroute.route") == "flex"

    def test_a_stream_ends_its_span_with_the_record(self, traced: Traced) -> None:
        """A streamed flex answer's span carries the usage read from the stream."""
        client = traced.proxy.client()
        with client.chat.completions.with_streaming_response.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"start_within": "2s"},
        ) as response:
            request_id = response.headers["x-flexroute-request-id"]
            list(response.iter_lines())
        server, _ = traced.spans(request_id, 2)
        assert attr(server, "flexroute.status") == "ok"
        assert attr(server, "gen_ai.usage.output_tokens") > 0

    def test_a_request_refused_before_routing_is_one_error_span(self, traced: Traced) -> None:
        """A 400 naming the field still leaves a span, marked as an error."""
        import openai

        with pytest.raises(openai.BadRequestError) as raised:
            chat(traced.proxy.client(), "", extra_body={"start_within": "soon"})
        request_id = raised.value.response.headers["x-flexroute-request-id"]
        [span] = traced.spans(request_id, 1)
        assert attr(span, "http.response.status_code") == 400
        assert span.status.status_code is StatusCode.ERROR


class TestOff:
    def test_without_otel_variables_there_is_no_tracer_and_traceparent_passes(
        self, proxy: Proxy, emulator: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Traces off: the client's own traceparent reaches the provider untouched."""
        raw = chat(proxy.client(), "", TRACEPARENT)
        [seen] = attempts(emulator, raw.headers["x-flexroute-request-id"])
        assert seen["headers"]["traceparent"] == TRACEPARENT

    def test_the_variables_that_turn_traces_on_and_off(self) -> None:
        """An exporter or an OTLP endpoint turns traces on; SDK_DISABLED and none win."""
        assert tracing_requested({}) == []
        assert tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ["otlp"]
        assert tracing_requested({"OTEL_TRACES_EXPORTER": "console,otlp"}) == ["console", "otlp"]
        assert tracing_requested({"OTEL_TRACES_EXPORTER": "none"}) == []
        on = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}
        assert tracing_requested(on) == []
        assert tracing_from_env({}) is None

    def test_the_environment_builds_the_exporters(self) -> None:
        """otlp over http/protobuf by default; a misspelt exporter is one line with the fix."""
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
        tracer = tracer_from_env(env, ["otlp", "console"])
        assert tracer.description == "otlp http/protobuf to http://127.0.0.1:4318, console"
        assert tracer.provider.resource.attributes["service.name"] == "flexroute"
        tracer.provider.shutdown()
        with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER='jaegr'.*use otlp or console"):
            tracer_from_env({}, ["jaegr"])
        with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
            tracer_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, ["otlp"])

    def test_a_missing_extra_is_one_warning_and_no_traces(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """OTEL_* set without OpenTelemetry installed: one line naming the fix, no traceback."""
        from flexroute import tracing

        for name in [n for n in sys.modules if n.split(".")[0] == "opentelemetry"]:
            monkeypatch.setitem(sys.modules, name, None)  # the import fails as if not installed
        monkeypatch.delitem(sys.modules, "flexroute.otel")
        monkeypatch.delattr(flexroute, "otel", raising=False)
        monkeypatch.setattr(tracing, "_warned", False)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
        with caplog.at_level(logging.WARNING, logger="flexroute"):
            assert tracing_from_env(env) is None
            assert tracing_from_env(env) is None
        [line] = [r for r in caplog.records if r.name == "flexroute"]
        assert "pip install 'flexroute[otel]'" in line.getMessage()
        assert line.exc_info is None
