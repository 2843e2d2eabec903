"""The emulator as a raw ASGI app: routes, the attempt log, and the timing of each answer.

A model call goes: read the body → log it → parse controls and the request → plan the attempt
(capacity model) → answer an error, a body after the queue, or a stream (preamble at once,
the queue, then one step per output piece, optionally dropped midway). Wire modules build the
bytes; this module owns every wait.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from flexroute.emulator import gemini, gemini_interactions, openai_common
from flexroute.emulator.anthropic import AnthropicWire
from flexroute.emulator.capacity import CapacityModel, EmulatorConfig, Plan, Tier, refusal_key
from flexroute.emulator.content import Reply, build_reply, dumps
from flexroute.emulator.controls import HEADER, ControlError, parse_controls
from flexroute.emulator.exchange import (
    AbruptClose,
    Exchange,
    Message,
    Receive,
    Send,
    quiet_abrupt_closes,
)
from flexroute.emulator.log import AttemptLog
from flexroute.emulator.openai_chat import ChatWire
from flexroute.emulator.openai_responses import ResponsesWire
from flexroute.emulator.wire import (
    JSON_TYPE,
    SSE_TYPE,
    BadRequestError,
    Call,
    Meta,
    Problem,
    Script,
    Wire,
)

_MODELS = ("gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini", "gpt-4o")
_WINDOW = 60.0


class Emulator:
    """``Emulator(config)`` is an ASGI app; ``log`` and ``reset()`` serve tests in-process."""

    def __init__(
        self, config: EmulatorConfig | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        """``clock`` (monotonic seconds by default) drives the flex weather, when it is on."""
        self.config = config or EmulatorConfig()
        self.capacity = CapacityModel(self.config, clock or time.monotonic)
        self.log = AttemptLog(self.config.log_limit)
        self._window: deque[tuple[float, int]] = deque()  # (arrival, tokens) this minute
        self._window_tokens = 0
        self._routes: dict[str, Wire] = {
            "/v1/chat/completions": ChatWire(),
            "/v1/responses": ResponsesWire(),
            "/v1/messages": AnthropicWire(),
            **dict.fromkeys(gemini_interactions.PATHS, gemini_interactions.InteractionsWire()),
        }
        self._patterns: list[tuple[re.Pattern[str], Wire]] = [
            (re.compile(gemini.PATH), gemini.GeminiWire())
        ]
        quiet_abrupt_closes()

    def reset(self) -> None:
        """Clear the log and the per-request counters; restart the seeded sequence."""
        self.log.clear()
        self.capacity.reset()
        self._window.clear()
        self._window_tokens = 0

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path.startswith("/_emulator/"):
            await self._control(method, path, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        record = self.log.open(path, headers, time.time())
        exchange = Exchange(receive, send, record)
        wire, params = self._match(path)
        if method == "POST" and wire is not None:
            await exchange.run(lambda ex, body: self._model_call(ex, body, wire, params, headers))
        elif method == "GET" and path == "/v1/models":
            await exchange.run(lambda ex, body: ex.respond(200, [_json()], _models()))
        else:
            message = f"Unknown request URL: {method} {path}."
            body = dumps(
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "unknown_url",
                    }
                }
            )
            await exchange.run(lambda ex, _: ex.respond(404, [_json()], body))

    def _match(self, path: str) -> tuple[Wire | None, dict[str, str]]:
        if path in self._routes:
            return self._routes[path], {}
        for pattern, wire in self._patterns:
            match = pattern.fullmatch(path)
            if match:
                return wire, match.groupdict()
        return None, {}

    async def _control(self, method: str, path: str, send: Send) -> None:
        if method == "GET" and path == "/_emulator/log":
            status, body = 200, dumps(self.log.snapshot())
        elif method == "POST" and path == "/_emulator/reset":
            self.reset()
            status, body = 200, b'{"reset":true}'
        else:
            status, body = 404, b'{"error":"unknown emulator control path"}'
        headers = [(b"content-type", JSON_TYPE.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _model_call(
        self,
        exchange: Exchange,
        raw: bytes,
        wire: Wire,
        params: Mapping[str, str],
        headers: list[tuple[str, str]],
    ) -> None:
        record = exchange.record
        lower = {name.lower(): value for name, value in headers}
        record.client_request_id = lower.get("x-client-request-id")
        record.controls = lower.get(HEADER)
        meta = Meta(record.seq, "", int(record.arrived_at), Tier.STANDARD)
        try:
            body = json.loads(raw) if raw.strip() else None
            if not isinstance(body, dict):
                raise BadRequestError("We could not parse the JSON body of your request.")
            call = wire.read(body, params, lower)
            record.model, record.stream = call.model, call.stream
            record.tier_requested = call.tier_requested
            controls = parse_controls(lower.get(HEADER))
        except (BadRequestError, ControlError, ValueError) as error:
            await self._error(exchange, wire, meta, 400, Problem.INVALID, str(error))
            return
        key = refusal_key(record.client_request_id, raw)
        if controls is None:  # the weather draws each attempt afresh
            key = f"{key}#{record.seq}"
        plan = self.capacity.plan(call.tier, controls, key, call.model)
        record.weather = plan.weather
        reply = build_reply(plan, body)
        meta = self._meta(record.seq, record.arrived_at, call, plan, reply)
        if plan.error_status is not None:
            extra = _retry_after(plan.retry_after)
            status = plan.error_status
            await self._error(exchange, wire, meta, status, Problem.SCRIPTED, "", extra)
        elif plan.refuse_stream and call.stream and isinstance(wire, ChatWire | ResponsesWire):
            headers = [_json(), *self._headers(exchange, wire, meta, error=True)]
            await exchange.respond(400, headers, openai_common.STREAM_REFUSAL_BODY)
        elif (
            plan.refusal is not None
            and plan.refusal.in_stream
            and call.stream
            and isinstance(wire, ChatWire | ResponsesWire)
        ):
            script = wire.refusal_script(reply, meta, plan.refusal.in_stream, plan.refusal.code)
            await self._refuse_in_stream(exchange, wire, meta, plan, script)
        elif plan.refusal is not None:
            extra = _retry_after(plan.refusal.retry_after)
            usual = wire.overload_status if plan.refusal.overloaded else wire.refuse_status
            status = plan.refusal.status or usual
            await self._error(exchange, wire, meta, status, Problem.CAPACITY, "", extra)
        elif plan.fault is not None:
            await self._fault(exchange, wire, meta, plan, reply, stream=call.stream)
        else:
            record.tier_served = wire.tier_name(plan.tier_served)
            deadline = None if call.timeout is None else record.arrived_at + call.timeout
            if call.stream:
                await self._stream(exchange, wire, meta, plan, reply, deadline)
            else:
                await self._whole(exchange, wire, meta, plan, reply, deadline)

    def _meta(self, seq: int, arrived: float, call: Call, plan: Plan, reply: Reply) -> Meta:
        while self._window and self._window[0][0] < arrived - _WINDOW:
            self._window_tokens -= self._window.popleft()[1]
        self._window.append((arrived, reply.total_tokens))
        self._window_tokens += reply.total_tokens
        return Meta(
            seq=seq,
            model=call.model,
            created=int(arrived),
            tier=plan.tier_served,
            include_usage=call.include_usage,
            window_requests=len(self._window),
            window_tokens=self._window_tokens,
            reasoning=plan.reasoning is not None,
        )

    def _headers(
        self, exchange: Exchange, wire: Wire, meta: Meta, *, error: bool
    ) -> list[tuple[str, str]]:
        elapsed = round((exchange.clock() - exchange.record.arrived_at) * 1000)
        return wire.headers(meta, elapsed_ms=elapsed, error=error)

    async def _error(
        self,
        exchange: Exchange,
        wire: Wire,
        meta: Meta,
        status: int,
        problem: Problem,
        message: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        headers = [_json(), *self._headers(exchange, wire, meta, error=True), *(extra or [])]
        await exchange.respond(status, headers, wire.error(status, problem, message))

    async def _queue(
        self, exchange: Exchange, wire: Wire, meta: Meta, seconds: float, deadline: float | None
    ) -> bool:
        """Wait ``seconds``; past the deadline, answer 504 (or drop a started stream)."""
        if deadline is None or exchange.clock() + seconds <= deadline:
            await anyio.sleep(seconds)
            return True
        await anyio.sleep(max(0.0, deadline - exchange.clock()))
        if exchange.started:
            raise AbruptClose
        exchange.record.tier_served = None
        await self._error(exchange, wire, meta, 504, Problem.DEADLINE, "")
        return False

    async def _whole(
        self,
        exchange: Exchange,
        wire: Wire,
        meta: Meta,
        plan: Plan,
        reply: Reply,
        deadline: float | None,
    ) -> None:
        generation = plan.token_interval * max(0, len(reply.pieces) - 1)
        waited = plan.queue + (plan.reasoning or 0.0) + generation
        if await self._queue(exchange, wire, meta, waited, deadline):
            headers = [_json(), *self._headers(exchange, wire, meta, error=False)]
            await exchange.respond(200, headers, wire.body(reply, meta), output=True)

    async def _stream(
        self,
        exchange: Exchange,
        wire: Wire,
        meta: Meta,
        plan: Plan,
        reply: Reply,
        deadline: float | None,
    ) -> None:
        script = wire.script(reply, meta)

        async def start() -> None:
            if not exchange.started:
                headers = [("content-type", SSE_TYPE), ("cache-control", "no-cache")]
                await exchange.start(
                    200, [*headers, *self._headers(exchange, wire, meta, error=False)]
                )

        if script.preamble:
            await start()
            await exchange.write(b"".join(script.preamble))
        if not await self._queue(exchange, wire, meta, plan.queue, deadline):
            return
        if plan.reasoning is not None:  # thinking: silent but for a reasoning item, if any
            if script.thinking:
                await start()
                await exchange.write(b"".join(script.thinking))
            if not await self._queue(exchange, wire, meta, plan.reasoning, deadline):
                return
        steps = script.steps
        broken = plan.break_after is not None and plan.break_after <= len(steps)
        if broken:
            steps = steps[: plan.break_after]
        await start()
        for index, step in enumerate(steps):
            if index and plan.token_interval:
                await anyio.sleep(plan.token_interval)
            await exchange.write(step, output=True)
        if broken:
            raise AbruptClose
        await exchange.finish(b"".join(script.closing), output=True)

    async def _refuse_in_stream(
        self, exchange: Exchange, wire: Wire, meta: Meta, plan: Plan, script: Script
    ) -> None:
        """Flex refused inside a 200 stream: the preamble, the queue, the refusal, the end."""
        headers = [("content-type", SSE_TYPE), ("cache-control", "no-cache")]
        await exchange.start(200, [*headers, *self._headers(exchange, wire, meta, error=False)])
        await exchange.write(b"".join(script.preamble))
        await anyio.sleep(plan.queue)
        await exchange.finish(b"".join(script.steps))

    async def _fault(
        self, exchange: Exchange, wire: Wire, meta: Meta, plan: Plan, reply: Reply, *, stream: bool
    ) -> None:
        """A flex attempt that ends, after the queue, before any output (``flex_fault``)."""
        exchange.record.tier_served = None
        content_type = SSE_TYPE if stream else JSON_TYPE
        headers = self._headers(exchange, wire, meta, error=False)
        if plan.fault in ("empty", "html"):
            await anyio.sleep(plan.queue)
            if plan.fault == "empty":
                await exchange.respond(200, [("content-type", content_type), *headers], b"")
            else:
                html = [("content-type", "text/html; charset=utf-8"), *headers]
                await exchange.respond(200, html, _HTML)
            return
        await exchange.start(200, [("content-type", content_type), *headers])
        if stream:
            await exchange.write(b"".join(wire.script(reply, meta).preamble))
        await anyio.sleep(plan.queue)
        if plan.fault == "drop":
            raise AbruptClose
        await exchange.finish()


# What a load balancer in front of a provider may answer, with a 200, instead of the API.
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Please wait</title></head>\n\n"
    b"<body><h1>One moment, please.</h1>\n\n<p>The service is busy.</p></body></html>\n"
)


def _json() -> tuple[str, str]:
    return ("content-type", JSON_TYPE)


def _retry_after(seconds: float | None) -> list[tuple[str, str]]:
    if seconds is None:
        return []
    return [("retry-after", f"{seconds:g}"), ("retry-after-ms", str(round(seconds * 1000)))]


def _models() -> bytes:
    data = [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in _MODELS
    ]
    return dumps({"object": "list", "data": data})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(
    config: EmulatorConfig | None = None, clock: Callable[[], float] | None = None
) -> Emulator:
    """The emulator ASGI app for ``config`` (default: the seeded model, seed 0); ``clock``
    drives the flex weather (``EmulatorConfig.weather``)."""
    return Emulator(config, clock)
