"""The failover catalogue (issue 11, "How we will know"): every upstream fault, for every route,
streaming and not, through the proxy — what the client got, how long it took, and exactly one
true ledger record (none where the request never reached a provider).

Routes: ``flex`` (the fault hits the flex attempt: before its first output it falls back, after
it the answer is broken), ``fallback`` (flex refused, the fault hits the standard attempt),
``passthrough`` (no budget: the one call hits the fault) and ``forwarded`` (a path no dialect
routes: relayed byte for byte). Chat completions go through the real openai SDK; forwarded
paths through raw aiohttp, to see the relayed bytes.

The second half, :class:`TestHostileContent`, sends each dialect's endpoint hostile content —
wrong field types, a body not of its content type, status 999, a header with a control byte —
and wants the dialect's own error shape back (or its in-band error event) and an
``upstream_error`` record without a fee.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import openai
import pytest

import flexroute
from flexroute import capture
from flexroute.config import Settings
from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.fault_upstream import Fault, dead_url, fault_upstream, settings_for, sse
from tests.recording_upstream import Seen

HEADERS_BOUND = 0.6  # FLEXROUTE_UPSTREAM_HEADERS_TIMEOUT in this module
IDLE_BOUND = 0.6  # FLEXROUTE_UPSTREAM_IDLE_TIMEOUT
TOTAL_BOUND = 1.0  # FLEXROUTE_UPSTREAM_TOTAL_TIMEOUT
START_WITHIN = 1.5  # seconds: outlasts the total bound
SLACK = 8.0  # a loaded 2-core machine: every case ends well inside its bound plus this
CLIENT_TIMEOUT = 20.0  # a case that hangs shows as a client timeout, not a stuck suite

JSON = ((b"content-type", b"application/json"),)
EVENTS = ((b"content-type", b"text/event-stream"),)


# -- what the provider says -------------------------------------------------------------------


def chat_body(tier: str, **usage: Any) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-5-mini",
            "service_tier": tier,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, **usage},
        }
    ).encode()


def chat_chunk(tier: str, delta: dict[str, Any] | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-5-mini",
        "service_tier": tier,
        "choices": choices,
        **extra,
    }
    return json.dumps(chunk).encode()


def chat_events(tier: str, **usage: Any) -> tuple[bytes, ...]:
    counts = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, **usage}
    return sse(
        chat_chunk(tier, {"role": "assistant", "content": "hel"}),
        chat_chunk(tier, {"content": "lo"}),
        chat_chunk(tier, {}, usage=None).replace(b"null", b'"stop"', 1),
        chat_chunk(tier, None, usage=counts),
        b"[DONE]",
    )


EMBEDDING = json.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
).encode()
FORWARDED_EVENTS = sse(b'{"type":"response.in_progress"}', b'{"type":"response.completed"}')
HTML = b"<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>"


def good(seen: Seen, tier: str) -> Fault:
    if "/chat/completions" not in seen.raw_path:
        if "stream=true" in seen.query:
            return Fault(headers=EVENTS, chunks=FORWARDED_EVENTS, content_length=False)
        return Fault(chunks=(EMBEDDING,))
    if seen.json().get("stream"):
        return Fault(headers=EVENTS, chunks=chat_events(tier), content_length=False)
    return Fault(chunks=(chat_body(tier),))


def faulty(name: str, seen: Seen, tier: str) -> Fault:
    """The fault ``name`` in the shape of the answer ``seen`` asked for."""
    answer = good(seen, tier)
    stream = answer.headers == EVENTS
    first, rest = answer.chunks[0], answer.chunks[1:]
    whole = b"".join(answer.chunks)
    if name == "timeout":
        return Fault(delay=30)
    if name == "reset-before-headers":
        return Fault(reset_before_headers=True)
    if name == "reset-mid-stream":
        part = first if stream else whole[:20]
        return Fault(headers=answer.headers, chunks=(part,), stall=0.1, reset=True)
    if name == "garbage":
        if stream:
            return Fault(headers=EVENTS, chunks=sse(HTML), content_length=False)
        return Fault(chunks=(HTML,))
    if name == "wrong-types":
        if "/chat/completions" not in seen.raw_path:
            bad = whole.replace(b'"prompt_tokens": 1', b'"prompt_tokens": "1"')
            return Fault(headers=answer.headers, chunks=(bad,), content_length=not stream)
        if stream:
            events = chat_events(tier, prompt_tokens="5", completion_tokens=-2)
            # apart, so a flex attempt commits at its first output before the bad usage comes
            return Fault(headers=EVENTS, chunks=events, content_length=False, gap=0.05)
        return Fault(chunks=(chat_body(tier, prompt_tokens="5", completion_tokens=-2),))
    if name == "status-999":
        return Fault(status_line=b"HTTP/1.1 999 Whatever", chunks=answer.chunks)
    if name == "control-byte-header":
        headers = (*answer.headers, (b"x-request-id", b"req\x01\x7fabc"))
        return Fault(headers=headers, chunks=answer.chunks, content_length=not stream)
    if name == "stall":
        return Fault(headers=answer.headers, chunks=(first if stream else whole[:20],), stall=30)
    if name == "keep-alive":  # comments only: never idle, never an output
        return Fault(headers=EVENTS, chunks=(b": keep-alive\n\n",) * 300, gap=0.1,
                     content_length=False)  # fmt: skip
    if name == "drip":
        drip = (
            tuple(bytes([b]) for b in b"".join(rest) * 20)
            if stream
            else tuple(bytes([b]) for b in whole[20:])
        )
        chunks = (first, *drip) if stream else (whole[:20], *drip)
        return Fault(headers=answer.headers, chunks=chunks, gap=0.1, content_length=not stream)
    raise AssertionError(name)


REFUSED = Fault(
    status_line=b"HTTP/1.1 429 Too Many Requests",
    headers=(*JSON, (b"retry-after", b"60")),
    chunks=(b'{"error":{"message":"no flex","type":"rate_limit","code":"resource_unavailable"}}',),
)


def script(seen: Seen) -> Fault:
    """``x-fault`` names the fault, ``x-case-route`` where it strikes."""
    fault = dict(seen.headers).get("x-fault", "")
    route = dict(seen.headers).get("x-case-route", "passthrough")
    tier = "default"
    if "/chat/completions" in seen.raw_path:
        tier = seen.json().get("service_tier") or "default"
    if route == "flex" and tier != "flex":
        return good(seen, tier)
    if route == "fallback" and tier == "flex":
        return REFUSED
    return faulty(fault, seen, tier)


# -- what the client should get ---------------------------------------------------------------

FAULTS = [
    "refusal",
    "timeout",
    "reset-before-headers",
    "reset-mid-stream",
    "garbage",
    "wrong-types",
    "status-999",
    "control-byte-header",
    "stall",
    "drip",
]
ROUTES = ["flex", "fallback", "passthrough", "forwarded"]
# Faults that strike a flex attempt before its first output: flexroute falls back at once.
BEFORE_OUTPUT = {"timeout", "reset-before-headers", "garbage", "status-999", "control-byte-header"}
# What a broken answer is recorded as, and the error code the client reads.
TIMED_OUT = {"timeout", "stall", "drip"}
CODES = {
    "refusal": (502, "upstream_unreachable"),
    "timeout": (504, "upstream_timeout"),
    "reset-before-headers": (502, "upstream_stream_broken"),
    "reset-mid-stream": (502, "upstream_stream_broken"),
    "garbage": (502, "upstream_malformed_response"),
    "wrong-types": (502, "upstream_malformed_response"),
    "status-999": (502, "upstream_malformed_response"),
    "control-byte-header": (502, "upstream_malformed_response"),
    "stall": (504, "upstream_timeout"),
    "drip": (504, "upstream_timeout"),
}
# The bound that ends each timed-out case (its lower time bound).
BOUND = {"timeout": HEADERS_BOUND, "stall": IDLE_BOUND, "drip": TOTAL_BOUND}


@dataclass(frozen=True)
class Expect:
    kind: str  # served | error | in-band | cut | relayed
    status: int | None  # the HTTP status the client sees
    code: str | None  # the error code it reads
    record: str | None  # the record's status; None: no record at all
    route: str | None  # the record's route


def expect(fault: str, route: str, stream: bool) -> Expect:
    status, code = CODES[fault]
    if fault == "refusal":
        return Expect("error", status, code, None, None)
    recorded = "upstream_timeout" if fault in TIMED_OUT else "upstream_error"
    if route == "flex" and fault in BEFORE_OUTPUT:
        return Expect("served", 200, None, "ok", "fallback")
    if route == "forwarded" and fault in {"garbage", "wrong-types"}:
        return Expect("relayed", 200, None, "ok", "passthrough")  # never parsed: relayed as is
    record_route = {"forwarded": "passthrough"}.get(route, route)
    before_headers = fault in {"timeout", "reset-before-headers", "status-999",
                               "control-byte-header"}  # fmt: skip
    if before_headers:
        return Expect("error", status, code, recorded, record_route)
    if stream:
        return Expect("in-band", 200, code, recorded, record_route)
    if route == "forwarded":  # a body that is not an event stream cannot carry an error
        return Expect("cut", 200, None, recorded, record_route)
    if route == "passthrough" and fault == "garbage" and stream:
        return Expect("in-band", 200, code, recorded, record_route)
    return Expect("error", status, code, recorded, record_route)


@dataclass
class Got:
    kind: str
    status: int | None
    code: str | None
    request_id: str | None
    elapsed: float
    detail: str = ""


# -- the proxy under test ---------------------------------------------------------------------


@dataclass
class Stand:
    url: str  # the proxy
    dead_url: str  # a second proxy whose provider refuses connections
    ledger: Path
    dead_ledger: Path


@pytest.fixture(scope="module")
def stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    tmp = tmp_path_factory.mktemp("catalogue")
    with fault_upstream(script) as upstream:

        def settings(base: str, name: str) -> Settings:
            return Settings.model_validate(
                {
                    "openai_base_url": f"{base}/v1",
                    "gemini_base_url": base,
                    "anthropic_base_url": base,
                    "database_url": f"sqlite:///{tmp / name}",
                    "openai_api_key": None,
                    "gemini_api_key": None,
                    "google_api_key": None,
                    "anthropic_api_key": None,
                    "upstream_connect_timeout": 2.0,
                    "upstream_headers_timeout": HEADERS_BOUND,
                    "upstream_idle_timeout": IDLE_BOUND,
                    "upstream_total_timeout": TOTAL_BOUND,
                    # each case is one fault on one route: none may learn from the faults
                    # before it (adaptive mode would skip flex after them; that behaviour is
                    # tests/test_adaptive_flex.py's)
                    "flex_mode": "always",
                }
            )

        with (
            serve_in_thread(create_app(settings(upstream.url, "ledger.sqlite3"))) as url,
            dead_url() as nowhere,
            serve_in_thread(create_app(settings(nowhere, "dead.sqlite3"))) as dead,
        ):
            yield Stand(url, dead, tmp / "ledger.sqlite3", tmp / "dead.sqlite3")


def count_records(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    with sqlite3.connect(ledger, timeout=10) as db:
        try:
            (n,) = db.execute("SELECT count(*) FROM requests").fetchone()
        except sqlite3.OperationalError:  # no table yet: nothing recorded
            return 0
    return int(n)


def record_of(url: str, request_id: str) -> dict[str, Any] | None:
    async def get() -> dict[str, Any] | None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/flexroute/v1/requests/{request_id}") as response,
        ):
            return None if response.status == 404 else await response.json()

    return anyio.run(get)


def call_chat(base: str, fault: str, route: str, stream: bool) -> Got:
    client = openai.OpenAI(
        api_key="sk-test", base_url=f"{base}/v1", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    extra: dict[str, Any] = (
        {"start_within": f"{START_WITHIN}s"} if route in ("flex", "fallback") else {}
    )
    began = time.monotonic()
    request_id: str | None = None
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            extra_body=extra,
            extra_headers={"x-fault": fault, "x-case-route": route},
        )
        request_id = raw.headers.get("x-flexroute-request-id")
        if stream:
            text = ""
            for chunk in raw.parse():
                text += "".join(c.delta.content or "" for c in chunk.choices)  # type: ignore[union-attr]
            assert text == "hello", text
        else:
            assert raw.parse().choices[0].message.content == "hello"  # type: ignore[union-attr]
        return Got("served", raw.status_code, None, request_id, time.monotonic() - began)
    except openai.APIStatusError as error:
        request_id = error.response.headers.get("x-flexroute-request-id")
        return Got("error", error.status_code, error.code, request_id,
                   time.monotonic() - began, error.message)  # fmt: skip
    except openai.APITimeoutError as error:
        return Got("hang", None, None, request_id, time.monotonic() - began, str(error))
    except openai.APIConnectionError as error:
        return Got("cut", None, None, request_id, time.monotonic() - began, repr(error))
    except openai.APIError as error:  # an in-band error event after the 200
        return Got("in-band", 200, error.code, request_id, time.monotonic() - began, error.message)
    except Exception as error:  # whatever else the client hits is the finding
        return Got("other", None, None, request_id, time.monotonic() - began, repr(error))
    finally:
        client.close()


def call_forwarded(base: str, fault: str, stream: bool) -> Got:
    async def go() -> Got:
        began = time.monotonic()
        headers = {"x-fault": fault, "authorization": "Bearer sk-test"}
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        request_id = None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if stream:
                request = session.get(f"{base}/v1/responses/resp_1?stream=true", headers=headers)
            else:
                body = {"model": "text-embedding-3-small", "input": "x"}
                request = session.post(f"{base}/v1/embeddings", json=body, headers=headers)
            try:
                async with request as response:
                    request_id = response.headers.get("x-flexroute-request-id")
                    status = response.status
                    data = await response.read()
            except TimeoutError as error:
                return Got("hang", None, None, request_id, time.monotonic() - began, repr(error))
            except aiohttp.ClientError as error:
                return Got("cut", 200, None, request_id, time.monotonic() - began, repr(error))
        elapsed = time.monotonic() - began
        if status != 200:
            code = _error_code(data)
            return Got("error", status, code, request_id, elapsed, data[:200].decode("latin-1"))
        if b"error" in data and stream:
            return Got("in-band", 200, _event_code(data), request_id, elapsed)
        return Got("relayed", 200, None, request_id, elapsed, data[:200].decode("latin-1"))

    return anyio.run(go)


def _error_code(data: bytes) -> str | None:
    try:
        error = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if "details" in error:  # Gemini's shape: the code is the ErrorInfo reason
        return str(error["details"][0]["reason"])
    code = error.get("code")
    return None if code is None else str(code)


def _event_code(data: bytes) -> str | None:
    for line in data.decode("latin-1").splitlines():
        if line.startswith("data: ") and '"error"' in line:
            error = json.loads(line[6:])["error"]
            code = error.get("reason") or error.get("code")  # Gemini's reason, or the code
            return None if code is None else str(code)
    return None


def wait_for_records(ledger: Path, before: int, want: int) -> int:
    """The ledger's count of new records once it has ``want`` (or after 3 s), a moment later:
    every path writes its record before the client's last byte, so a second one for the
    same request would be there by then."""
    deadline = time.monotonic() + 3
    while count_records(ledger) - before < want and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)
    return count_records(ledger) - before


class TestCatalogue:
    @pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
    @pytest.mark.parametrize("route", ROUTES)
    @pytest.mark.parametrize("fault", FAULTS)
    def test_the_client_gets_a_clean_answer_or_error_and_the_ledger_one_true_record(
        self, stand: Stand, fault: str, route: str, stream: bool
    ) -> None:
        """Each fault × route × streaming: what the client got, in time, and one record."""
        want = expect(fault, route, stream)
        base, ledger = (stand.dead_url, stand.dead_ledger) if fault == "refusal" else (
            stand.url, stand.ledger)  # fmt: skip
        before = count_records(ledger)
        if route == "forwarded":
            got = call_forwarded(base, fault, stream)
        else:
            got = call_chat(base, fault, route, stream)
        assert (got.kind, got.status, got.code) == (want.kind, want.status, want.code), got
        lower = BOUND.get(fault, 0.0) * 0.8 if want.kind != "served" else 0.0
        assert lower <= got.elapsed < BOUND.get(fault, 0.0) + SLACK, got
        assert got.request_id is not None, got
        new = wait_for_records(ledger, before, 0 if want.record is None else 1)
        if want.record is None:
            assert new == 0
            assert record_of(base, got.request_id) is None
            return
        assert new == 1, f"{new} records for one request"
        record = record_of(base, got.request_id)
        assert record is not None
        assert (record["status"], record["route"]) == (want.record, want.route), record
        if want.record != "ok":
            assert Decimal(record["fee_usd"] or 0) == 0, record


class TestTheTotalBound:
    def test_it_never_cuts_the_flex_budget_short(self, stand: Stand) -> None:
        """A flex attempt that keeps the line alive without output past the total bound still
        has its whole budget: it falls back at start_within, not at the total bound."""
        got = call_chat(stand.url, "keep-alive", "flex", stream=False)
        assert (got.kind, got.status) == ("served", 200), got
        assert got.request_id is not None
        record = record_of(stand.url, got.request_id)
        assert record is not None
        assert (record["route"], record["reason"]) == ("fallback", "flex-not-started-in-time")
        budget = START_WITHIN * 1000
        assert budget - 100 <= record["flex_wait_ms"] < budget + SLACK * 1000, record
        assert TOTAL_BOUND < START_WITHIN  # the bound the attempt outlived


class TestTheWrapper:
    """``flexroute.wrap()`` runs the same engine: the same faults give the same errors."""

    @pytest.mark.parametrize(
        ("fault", "status", "code"),
        [
            ("wrong-types", 502, "upstream_malformed_response"),
            ("status-999", 502, "upstream_malformed_response"),
            ("control-byte-header", 502, "upstream_malformed_response"),
            ("reset-before-headers", 502, "upstream_stream_broken"),
        ],
    )
    def test_a_wrapped_client_raises_the_sdks_error_and_the_record_says_so(
        self, tmp_path: Path, fault: str, status: int, code: str
    ) -> None:
        """The SDK raises its APIStatusError with flexroute's code; the record is true."""
        with fault_upstream(script) as upstream:
            settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.sqlite3'}")
            bare = openai.OpenAI(api_key="sk-1", base_url=f"{upstream.url}/v1", max_retries=0)
            client = flexroute.wrap(bare, settings=settings)
            try:
                with capture() as outcomes, pytest.raises(openai.APIStatusError) as raised:
                    client.chat.completions.create(
                        model="gpt-5-mini",
                        messages=[{"role": "user", "content": "hi"}],
                        extra_headers={"x-fault": fault, "x-case-route": "passthrough"},
                    )
            finally:
                client.close()
        assert (raised.value.status_code, raised.value.code) == (status, code)
        [outcome] = outcomes
        assert outcome.status == "upstream_error"


# -- hostile content, dialect by dialect ------------------------------------------------------

GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:"


def gemini_answer(**meta: Any) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "hello"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, **meta},
    }


def anthropic_answer(**usage: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 2, **usage},
    }


def responses_answer(**usage: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-5-mini",
        "service_tier": "default",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "hello", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7, **usage},
    }


def chat_answer(**usage: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(chat_body("default"))
    result["usage"].update(usage)
    return result


def stream_of(dialect: str, answer: dict[str, Any]) -> tuple[bytes, ...]:
    """The answer as that dialect's event stream (the content, then the usage at the end)."""
    if dialect == "chat":
        usage = answer["usage"]
        choices = answer["choices"]
        content = (
            choices[0]["message"]["content"] if isinstance(choices, list) else "hello"
        )  # a non-list ``choices`` still goes out as such in the first chunk
        first = chat_chunk("default", {"role": "assistant", "content": content})
        if not isinstance(choices, list):
            first = json.dumps({**json.loads(first), "choices": choices}).encode()
        return sse(first, chat_chunk("default", None, usage=usage), b"[DONE]")
    if dialect == "responses":
        done = {"type": "response.completed", "response": answer}
        created = {"type": "response.created", "response": {**answer, "output": []}}
        delta = {"type": "response.output_text.delta", "delta": "hello", "output_index": 0}
        return (
            b"event: response.created\ndata: " + json.dumps(created).encode() + b"\n\n",
            b"event: response.output_text.delta\ndata: " + json.dumps(delta).encode() + b"\n\n",
            b"event: response.completed\ndata: " + json.dumps(done).encode() + b"\n\n",
        )
    if dialect == "gemini":
        return sse(json.dumps(answer).encode())
    assert dialect == "anthropic"
    content = answer["content"] if not isinstance(answer["content"], list) else []
    start = {"type": "message_start", "message": {**answer, "content": content}}
    block = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "hello"}}  # fmt: skip
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
             "usage": answer["usage"]}  # fmt: skip
    return tuple(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
        for e in (start, block, delta, {"type": "message_stop"})
    )


ANSWERS = {
    "chat": chat_answer,
    "responses": responses_answer,
    "gemini": gemini_answer,
    "anthropic": anthropic_answer,
}
PROMPT_FIELD = {
    "chat": "prompt_tokens",
    "responses": "input_tokens",
    "gemini": "promptTokenCount",
    "anthropic": "input_tokens",
}
# The field each dialect's answer holds its output in, given the wrong type.
SHAPE = {"chat": "choices", "responses": "output", "gemini": "candidates", "anthropic": "content"}

CONTENT = [
    "usage-string",
    "usage-negative",
    "usage-huge",
    "shape-wrong-type",
    "html-as-json",
    "json-as-event-stream",
    "garbage-events",
    "status-999",
    "status-600",
    "control-byte-header",
]


def hostile(dialect: str, case: str, stream: bool) -> Fault:
    make = ANSWERS[dialect]
    prompt = PROMPT_FIELD[dialect]
    answer = make()
    if case == "usage-string":
        answer = make(**{prompt: "5"})
    elif case == "usage-negative":
        answer = make(**{prompt: -5})
    elif case == "usage-huge":
        answer = make(**{prompt: 10**30})
    elif case == "shape-wrong-type":
        answer[SHAPE[dialect]] = {"0": answer[SHAPE[dialect]]}  # an object where a list goes
    chunks = stream_of(dialect, answer) if stream else (json.dumps(answer).encode(),)
    headers = EVENTS if stream else JSON
    if case == "html-as-json":
        return Fault(headers=JSON, chunks=(HTML,))
    if case == "json-as-event-stream":
        return Fault(headers=EVENTS, chunks=(json.dumps(answer).encode(),))
    if case == "garbage-events":
        return Fault(headers=EVENTS, chunks=(b"data: " + HTML + b"\n\n",), content_length=False)
    if case == "status-999":
        return Fault(status_line=b"HTTP/1.1 999 Whatever", headers=headers, chunks=chunks)
    if case == "status-600":
        return Fault(status_line=b"HTTP/1.1 600 Nope", headers=headers, chunks=chunks)
    if case == "control-byte-header":
        return Fault(headers=(*headers, (b"x-trace", b"a\x01b")), chunks=chunks)
    return Fault(headers=headers, chunks=chunks, content_length=not stream)


def request_for(dialect: str, stream: bool) -> tuple[str, dict[str, Any]]:
    if dialect == "chat":
        messages = [{"role": "user", "content": "hi"}]
        return "/v1/chat/completions", {
            "model": "gpt-5-mini",
            "stream": stream,
            "messages": messages,
        }
    if dialect == "responses":
        return "/v1/responses", {"model": "gpt-5-mini", "input": "hi", "stream": stream}
    if dialect == "gemini":
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return GEMINI_PATH + method, {"contents": [{"parts": [{"text": "hi"}]}]}
    return "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": stream,
                            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip


@pytest.fixture(scope="module")
def content_stand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stand]:
    tmp = tmp_path_factory.mktemp("content")

    def answer(seen: Seen) -> Fault:
        case = dict(seen.headers)["x-case"]
        dialect, stream = (
            dict(seen.headers)["x-dialect"],
            "alt=sse" in seen.query or bool(seen.json().get("stream")),
        )
        return hostile(dialect, case, stream)

    with fault_upstream(answer) as upstream:
        settings = settings_for(upstream.url, tmp / "ledger.sqlite3")
        with serve_in_thread(create_app(settings)) as url:
            yield Stand(url, "", tmp / "ledger.sqlite3", tmp / "none")


class TestHostileContent:
    @pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
    @pytest.mark.parametrize("dialect", list(ANSWERS))
    @pytest.mark.parametrize("case", CONTENT)
    def test_the_client_gets_its_dialects_error_and_the_record_says_upstream_error(
        self, content_stand: Stand, case: str, dialect: str, stream: bool
    ) -> None:
        """Hostile content from the provider: a clean error (or in-band event), no fee."""
        path, body = request_for(dialect, stream)
        headers = {"x-case": case, "x-dialect": dialect}
        before = count_records(content_stand.ledger)

        async def go() -> tuple[int, dict[str, str], bytes | None, str]:
            timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                url = content_stand.url + path
                try:
                    async with session.post(url, json=body, headers=headers) as response:
                        lowered = {k.lower(): v for k, v in response.headers.items()}
                        return response.status, lowered, await response.read(), ""
                except (aiohttp.ClientError, TimeoutError) as error:
                    return 0, {}, None, repr(error)

        status, got_headers, data, failure = anyio.run(go)
        assert data is not None, f"no response: {failure}"
        assert status in (200, 502), (status, data[:300])
        if status == 200:  # the headers went out before the fault: an in-band event
            assert stream, data[:300]
            code = _event_code(data)
        else:
            code = _error_code(data)
            assert got_headers["x-should-retry"] == "true"
            assert got_headers["content-type"].startswith("application/json")
        assert code in ("upstream_malformed_response", "upstream_stream_broken"), data[:300]
        request_id = got_headers["x-flexroute-request-id"]
        assert wait_for_records(content_stand.ledger, before, 1) == 1
        record = record_of(content_stand.url, request_id)
        assert record is not None
        assert record["status"] == "upstream_error", record
        assert Decimal(record["fee_usd"] or 0) == 0
