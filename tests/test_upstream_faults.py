"""The boundaries where a hostile or silent provider's answer is read: the transport
(flexroute.upstream, for both HTTP clients) and the dialects' readers — the one place each
turns foreign errors and unreadable content into flexroute's (issue 11, items 3, 4, 6).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import anyio
import pytest

from flexroute.dialects.anthropic import AnthropicDialect
from flexroute.dialects.base import Dialect, int_field
from flexroute.dialects.gemini import GeminiDialect
from flexroute.dialects.openai_chat import ChatDialect
from flexroute.dialects.openai_responses import ResponsesDialect
from flexroute.dialects.sse import SSEEvent, encode_event, parse_event
from flexroute.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from flexroute.upstream import AiohttpUpstream, Bounds, Httpx2Upstream, Upstream, UpstreamRequest
from tests.fault_upstream import Fault, dead_url, fault_upstream

CLIENTS: list[Callable[[Bounds], Upstream]] = [AiohttpUpstream, Httpx2Upstream]
EVENTS = ((b"content-type", b"text/event-stream"),)
BOUNDS = Bounds(connect=2, headers=5, idle=0.5, total=1.0)


def fetch(make: Callable[[Bounds], Upstream], url: str, total: float | None = None) -> bytes:
    """Send one request and read the whole answer, as the engine would."""

    async def go() -> bytes:
        upstream = make(BOUNDS)
        try:
            response = await upstream.send(UpstreamRequest("POST", url, [], b"{}", total=total))
            try:
                return b"".join([chunk async for chunk in response.aiter_bytes()])
            finally:
                await response.aclose()
        finally:
            await upstream.aclose()

    return anyio.run(go)


@pytest.mark.parametrize("make", CLIENTS, ids=["aiohttp", "httpx2"])
class TestTheBoundary:
    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            (Fault(status_line=b"HTTP/1.1 999 Whatever"), UpstreamMalformed),
            (Fault(status_line=b"HTTP/1.1 600 Nope"), UpstreamMalformed),
            (Fault(headers=((b"x-trace", b"a\x01b"),)), UpstreamMalformed),
            (Fault(headers=((b"x-trace", b"a\x7fb"),)), UpstreamMalformed),
            (Fault(reset_before_headers=True), UpstreamStreamBroken),
            (Fault(status_line=b"NOT HTTP AT ALL"), UpstreamError),
        ],
        ids=["status-999", "status-600", "control-byte", "del-byte", "reset", "not-http"],
    )
    def test_a_head_http_does_not_allow_never_becomes_a_response(
        self, make: Callable[[Bounds], Upstream], fault: Fault, error: type[UpstreamError]
    ) -> None:
        """Status 999, a control byte in a header, a reset: flexroute's error, never relayed;
        and never "unreachable", which would say the request did not reach the provider."""
        with fault_upstream(lambda seen: fault) as upstream, pytest.raises(error) as raised:
            fetch(make, upstream.url + "/x")
        assert not isinstance(raised.value, UpstreamConnectError)

    def test_a_tab_and_latin_1_text_in_a_header_are_fine(
        self, make: Callable[[Bounds], Upstream]
    ) -> None:
        """Only control characters are refused: HTAB and obs-text are valid field content."""
        fault = Fault(headers=((b"x-trace", b"a\tb \xe9"),))
        with fault_upstream(lambda seen: fault) as upstream:
            assert fetch(make, upstream.url + "/x") == b'{"ok":true}'

    def test_a_refused_connection_is_unreachable(self, make: Callable[[Bounds], Upstream]) -> None:
        """No connection: the only case that says the provider was never reached."""
        with dead_url() as nowhere, pytest.raises(UpstreamConnectError):
            fetch(make, nowhere + "/x")

    def test_a_drip_is_cut_at_the_total_bound(self, make: Callable[[Bounds], Upstream]) -> None:
        """A byte every 0.1 s never trips the idle bound; the total bound ends it."""
        fault = Fault(headers=EVENTS, chunks=(b": x\n\n",) * 200, gap=0.1, content_length=False)
        with fault_upstream(lambda seen: fault) as upstream:
            began = time.monotonic()
            with pytest.raises(UpstreamTimeout, match="longer than 1 s"):
                fetch(make, upstream.url + "/x")
            assert 0.9 <= time.monotonic() - began < 6

    def test_a_request_may_set_its_own_total(self, make: Callable[[Bounds], Upstream]) -> None:
        """A flex attempt's total starts at its budget's end: the request's own bound wins."""
        fault = Fault(headers=EVENTS, chunks=(b": x\n\n",) * 20, gap=0.1, content_length=False)
        with fault_upstream(lambda seen: fault) as upstream:
            assert fetch(make, upstream.url + "/x", total=30.0) == b": x\n\n" * 20

    def test_a_stall_is_cut_at_the_idle_bound(self, make: Callable[[Bounds], Upstream]) -> None:
        """Silence after the first bytes: the idle bound, named as a stall."""
        fault = Fault(headers=EVENTS, chunks=(b": x\n\n",), stall=10, content_length=False)
        with fault_upstream(lambda seen: fault) as upstream:
            began = time.monotonic()
            with pytest.raises(UpstreamTimeout, match=r"stalled|longer than"):
                fetch(make, upstream.url + "/x")
            assert time.monotonic() - began < 6


def event(data: object, kind: str | None = None) -> SSEEvent:
    text = data if isinstance(data, str) else json.dumps(data)
    return parse_event(encode_event(text, event=kind))


DIALECTS: dict[str, Dialect] = {
    "chat": ChatDialect(),
    "responses": ResponsesDialect(),
    "gemini": GeminiDialect(),
    "anthropic": AnthropicDialect(),
}
HOSTILE_EVENTS = [
    ("chat", event({"choices": [{"index": [0], "delta": {"content": "x"}}]})),
    ("chat", event({"choices": "all of them"})),
    ("chat", event("<html>")),
    ("responses", event({"type": "response.completed", "response": "done"}, "response.completed")),
    (
        "responses",
        event({"type": "response.created", "response": {"output": 3}}, "response.created"),
    ),
    ("gemini", event({"candidates": [{"content": "hello"}]})),
    ("gemini", event({"candidates": [{"content": {"parts": 7}}]})),
    ("gemini", event({"usageMetadata": {"promptTokenCount": True}})),
    ("anthropic", event({"type": "message_start", "message": "hi"}, "message_start")),
    (
        "anthropic",
        event({"type": "message_delta", "usage": {"output_tokens": -1}}, "message_delta"),
    ),
    ("anthropic", event("garbage", "content_block_delta")),
]


class TestDialectsReadDefensively:
    @pytest.mark.parametrize(("dialect", "hostile"), HOSTILE_EVENTS)
    def test_any_error_reading_an_event_is_the_providers_malformed_stream(
        self, dialect: str, hostile: SSEEvent
    ) -> None:
        """A field of the wrong type, anywhere, raises UpstreamMalformed — never a TypeError
        or AttributeError that would end the client's connection with no error."""
        observer = DIALECTS[dialect].observer(wants_usage=True, assemble=True, headers={})
        with pytest.raises(UpstreamMalformed):
            observer.observe(hostile)

    @pytest.mark.parametrize(
        ("body", "headers"),
        [
            (b"<html>502</html>", {"content-type": "application/json"}),
            (b'{"usage": {"prompt_tokens": 1}}', {"content-type": "text/event-stream"}),
            (b"[1, 2]", {}),
            (b"", {"content-type": "application/json"}),
        ],
        ids=["html-as-json", "json-labelled-sse", "a-list", "empty"],
    )
    def test_a_whole_answer_must_be_a_json_object_labelled_json(
        self, body: bytes, headers: dict[str, str]
    ) -> None:
        """read_response refuses what a client SDK could not parse, in every dialect."""
        for dialect in DIALECTS.values():
            with pytest.raises(UpstreamMalformed):
                dialect.read_response(body, headers)

    @pytest.mark.parametrize(
        ("value", "count"), [(None, 0), (0, 0), (7, 7), (10**9, 10**9)], ids=str
    )
    def test_a_token_count_is_a_whole_number_up_to_a_billion(
        self, value: object, count: int
    ) -> None:
        """Absent or null is 0; the rest is read as is."""
        assert int_field({"n": value}, "n") == count

    @pytest.mark.parametrize("value", ["5", -1, 10**9 + 1, 2.0, True, [], {}], ids=repr)
    def test_anything_else_is_malformed_and_named(self, value: object) -> None:
        """The message names the field and what a token count is."""
        with pytest.raises(UpstreamMalformed, match=r"^usage\.n is .*not a token count"):
            int_field({"usage": {"n": value}}, "usage", "n")
