"""A bounded fuzz of what clients send through the proxy (issue 11, "How we will know"):
methods, paths, headers and bodies drawn by hypothesis — no 500, no hang, and nothing ever
sent to a host the operator did not configure. Then the other side: answers drawn for the
provider (any status, content type, field types, a reset) — no 500, no hang, one record.

Two recording upstreams listen on loopback: the configured one (every provider's base URL)
and a decoy whose address the fuzz plants everywhere a request could smuggle a destination
(paths, ``Host``, ``X-Forwarded-Host``, query strings, body fields). The decoy must see
nothing. The configured upstream answers as a provider would — JSON, an event stream for a
streaming request — so routed requests run their whole course.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexroute.config import Settings
from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.fault_upstream import Fault, fault_upstream, settings_for, sse
from tests.recording_upstream import Answer, RecordingUpstream, Seen, recording_upstream

ANSWER_WITHIN = 15.0  # seconds: a request still open after this is a hang
HI = [{"role": "user", "content": "hi"}]

CHAT = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-5-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}  # fmt: skip
DELTA = {"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}
CHUNK = {**CHAT, "object": "chat.completion.chunk", "choices": [DELTA]}


def provider(seen: Seen) -> Answer:
    """A plausible provider: an event stream when one is asked for, JSON otherwise."""
    try:
        body = json.loads(seen.body) if seen.body else {}
    except ValueError:
        body = {}
    streamed = "alt=sse" in seen.query or (isinstance(body, dict) and body.get("stream") is True)
    if streamed:
        events = [f"data: {json.dumps(CHUNK)}\n\n".encode(), b"data: [DONE]\n\n"]
        return Answer(chunks=events, content_type="text/event-stream")
    return Answer(body=json.dumps(CHAT).encode())


@dataclass
class Stand:
    url: str
    decoy: RecordingUpstream
    upstream: RecordingUpstream


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with recording_upstream(provider) as upstream, recording_upstream() as decoy:
        values: dict[str, Any] = {
            "openai_base_url": f"{upstream.url}/v1",
            "gemini_base_url": upstream.url,
            "anthropic_base_url": upstream.url,
            "database_url": f"sqlite:///{tmp / 'ledger.sqlite3'}",
            "openai_api_key": None,
            "gemini_api_key": None,
            "google_api_key": None,
            "anthropic_api_key": None,
            "upstream_headers_timeout": 5.0,
            "upstream_idle_timeout": 5.0,
            "upstream_total_timeout": 10.0,
        }
        with serve_in_thread(create_app(Settings.model_validate(values))) as url:
            yield Stand(url, decoy, upstream)


PATHS = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/models",
    "/v1beta/models/gemini-2.5-flash:generateContent",
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    "/v1/models/gemini-2.5-flash:generateContent",
    "/v1beta/interactions",
]
KEYS = ["model", "messages", "input", "contents", "stream", "start_within", "startWithin",
        "service_tier", "serviceTier", "stream_options", "max_tokens", "background",
        "base_url", "url", "api_base"]  # fmt: skip


def decoy_forms(decoy: str) -> st.SearchStrategy[str]:
    """The decoy's address in the forms a request might carry a destination."""
    hostport = decoy.removeprefix("http://")
    return st.sampled_from([decoy, hostport, f"//{hostport}", f"{decoy}/v1", f"@{hostport}"])


def scalars(decoy: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        decoy_forms(decoy),
        st.sampled_from(["flex", "default", "standard", "auto", "gpt-5-mini", "1s", "5s", "0"]),
    )


def bodies(decoy: str) -> st.SearchStrategy[bytes]:
    values = st.recursive(
        scalars(decoy),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)
    return st.one_of(
        objects.map(lambda obj: json.dumps(obj).encode()),
        st.binary(max_size=64),
        st.just(b""),
        st.just(b"{" * 2000),
    )


def paths(decoy: str) -> st.SearchStrategy[str]:
    suffix = st.one_of(
        st.just(""),
        st.text(alphabet="abc/.:%?&=@-_~0123456789", max_size=16),
        decoy_forms(decoy).map(lambda d: "/" + d),
        decoy_forms(decoy).map(lambda d: f"?url={d}&key=k"),
    )
    prefix = st.one_of(st.sampled_from(PATHS), decoy_forms(decoy).map(lambda d: "/" + d))
    return st.tuples(prefix, suffix).map(lambda parts: "".join(parts).replace("//", "/", 1))


HEADER_NAMES = ["x-flex-start-within", "content-type", "authorization", "x-api-key",
                "x-goog-api-key", "host", "x-forwarded-host", "x-stainless-retry-count",
                "x-flex-mode", "anthropic-version", "content-encoding", "accept-encoding",
                "connection", "x-client-request-id", "forwarded"]  # fmt: skip


def header_lists(decoy: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                               exclude_characters="\x7f"), max_size=30)  # fmt: skip
    value = st.one_of(printable, decoy_forms(decoy), st.sampled_from(["1s", "gzip", "-1", "abc"]))
    return st.lists(st.tuples(st.sampled_from(HEADER_NAMES), value), max_size=5)


def send(url: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> int:
    async def go() -> int:
        timeout = aiohttp.ClientTimeout(total=ANSWER_WITHIN)
        async with (
            aiohttp.ClientSession(timeout=timeout, skip_auto_headers=["Content-Type"]) as s,
            s.request(method, url + path, headers=headers, data=body or None) as response,
        ):
            await response.read()
            return response.status

    try:
        return anyio.run(go)
    except TimeoutError:
        pytest.fail(f"no answer within {ANSWER_WITHIN} s: {method} {path!r} {headers!r}")
    except aiohttp.ServerDisconnectedError:
        pytest.fail(f"the proxy dropped the connection: {method} {path!r} {headers!r}")


class TestFuzz:
    def test_no_500_no_hang_nothing_to_an_unconfigured_host(self, stand: Stand) -> None:
        """Hypothesis-drawn requests: every one answered below 500 (or a provider-like 502/504
        of flexroute's), in time; the decoy host never hears a byte."""
        decoy = stand.decoy.url

        slow = [HealthCheck.too_slow, HealthCheck.data_too_large]

        @settings(max_examples=120, deadline=None, database=None, suppress_health_check=slow)
        @given(
            method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]),
            path=paths(decoy),
            headers=header_lists(decoy),
            body=bodies(decoy),
        )
        def one(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> None:
            status = send(stand.url, method, path, headers, body)
            assert status != 500, (method, path, headers, body[:200])
            assert status < 600
            assert stand.decoy.seen == [], stand.decoy.seen[:1]

        one()
        assert stand.upstream.seen, "nothing reached the configured upstream: the fuzz is void"
        assert stand.decoy.seen == []


# -- hostile answers: the provider's side fuzzed ----------------------------------------------

ROUTED = {
    "chat": ("/v1/chat/completions", CHAT),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent", {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}),
    "anthropic": ("/v1/messages", {
        "id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1}}),
}  # fmt: skip
# Never 500: a 500 the client gets is then flexroute's own crash, never a relayed one.
STATUS_LINES = [b"200 OK", b"200 OK", b"200 OK", b"201 Created", b"400 Bad", b"429 Slow",
                b"502 Bad", b"503 Busy", b"999 Odd", b"600 Nope", b"204 No Content"]  # fmt: skip
CONTENT_TYPES = [b"application/json", b"text/event-stream", b"text/html", b""]


def mutated(answer: Any) -> st.SearchStrategy[Any]:
    """``answer`` with one value somewhere inside replaced by something of any type."""
    junk = st.recursive(
        st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                                    max_size=2),
        max_leaves=4,
    )  # fmt: skip

    def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [prefix]
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(
            value, list) else ()  # fmt: skip
        for key, inner in items:
            found += paths(inner, (*prefix, key))
        return found

    def put(path: tuple[Any, ...], value: Any) -> Any:
        if not path:
            return value
        copy = json.loads(json.dumps(answer))
        target = copy
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return copy

    return st.tuples(st.sampled_from(paths(answer)[1:]), junk).map(lambda pv: put(*pv))


@st.composite
def hostile_answers(draw: st.DrawFn, dialect: str, stream: bool) -> Fault:
    answer = draw(mutated(ROUTED[dialect][1]) | st.just(ROUTED[dialect][1]))
    status = draw(st.sampled_from(STATUS_LINES))
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    headers: tuple[tuple[bytes, bytes], ...] = ((b"content-type", content_type),)
    if draw(st.integers(0, 9)) == 0:
        headers += ((b"x-trace", b"a\x01b"),)
    if stream:
        event = json.dumps(answer).encode()
        chunks = draw(st.sampled_from([sse(event), sse(event, b"[DONE]"), (event,), sse(b"<x>")]))
    else:
        chunks = draw(st.sampled_from([(json.dumps(answer).encode(),), (b"<html>",), (b"",)]))
    cut = draw(st.integers(0, 9)) == 0
    return Fault(status_line=b"HTTP/1.1 " + status, headers=headers, chunks=chunks, reset=cut,
                 content_length=not stream)  # fmt: skip


@pytest.fixture(scope="module")
def hostile_stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-answers")
    with fault_upstream() as upstream:
        settings = settings_for(upstream.url, tmp / "ledger.sqlite3", upstream_total_timeout=10.0)
        with serve_in_thread(create_app(settings)) as url:
            yield url, upstream, tmp / "ledger.sqlite3"


def records(ledger: Path) -> int:
    with sqlite3.connect(ledger, timeout=10) as db:
        (n,) = db.execute("SELECT count(*) FROM requests").fetchone()
    return int(n)


class TestFuzzedAnswers:
    def test_whatever_the_provider_says_no_500_no_hang_one_record(
        self, hostile_stand: tuple[str, Any, Path]
    ) -> None:
        """Hypothesis-drawn provider answers — any status, content type, a field of any type,
        a reset — through each dialect: never a 500 or a dropped connection, one record each."""
        url, upstream, ledger = hostile_stand
        slow = [HealthCheck.too_slow, HealthCheck.data_too_large]

        @settings(max_examples=120, deadline=None, database=None, suppress_health_check=slow)
        @given(dialect=st.sampled_from(list(ROUTED)), stream=st.booleans(), data=st.data())
        def one(dialect: str, stream: bool, data: st.DataObject) -> None:
            fault = data.draw(hostile_answers(dialect, stream))
            upstream.script = lambda seen: fault
            path, _ = ROUTED[dialect]
            body: dict[str, Any] = {"model": "gpt-5-mini", "max_tokens": 5, "messages": HI}
            if dialect == "gemini":
                body = {"contents": [{"parts": [{"text": "hi"}]}]}
                path = path.replace("generateContent", "streamGenerateContent?alt=sse") if (
                    stream) else path  # fmt: skip
            elif stream:
                body["stream"] = True
            before = records(ledger)
            status = send(url, "POST", path, [("content-type", "application/json")],
                          json.dumps(body).encode())  # fmt: skip
            assert status != 500, fault  # the provider never says 500 here: a 500 is ours
            assert status < 600, fault
            assert records(ledger) - before == 1, fault

        one()
