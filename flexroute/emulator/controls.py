"""The per-request control header ``x-emulator``: ``key=value`` pairs separated by ``;``.

A request that carries the header is *scripted*: the seeded capacity model is bypassed and
every key left out takes its calm default (no queue, no refusal, default token count), so a
test states exactly the behaviour it needs, e.g. ``x-emulator: flex_queue=0.2;tokens=3``.

| key | value | effect |
|---|---|---|
| ``flex_queue`` | seconds | delay before the first output of a flex request |
| ``standard_queue`` | seconds | delay before the first output of a standard/priority request |
| ``flex_refuse`` | N or ``always`` | refuse the first N flex attempts of one request (or all) |
| ``retry_after`` | seconds | ``retry-after`` header on refusals |
| ``refuse_status`` | 429 or 503 (529 for Anthropic) | status of refusals |
| ``tokens`` | N | output content pieces (default 8) |
| ``token_interval`` | seconds | delay between output pieces |
| ``prompt_tokens``, ``cached_tokens``, ``reasoning_tokens`` | N | usage figures reported |
| ``cache_write_tokens``, ``cache_write_12h_tokens`` | N | OpenAI: 30-minute, 12-hour cache writes |
| ``audio_tokens`` | N | Gemini: prompt tokens reported as ``AUDIO`` in ``promptTokensDetails`` |
| ``tool_call`` | 1 | answer with a function tool call |
| ``refusal`` | 1 | answer with a refusal |
| ``break_after`` | N | streams: drop the connection after N output pieces |
| ``serve_tier`` | ``default``/``standard``, ``flex``, ``priority`` | tier reported served |
| ``status`` | HTTP code | answer with that error in the provider's format |
| ``refuse_in_stream`` | ``error``, ``failed`` | OpenAI streams: refusals inside a 200 stream |
| ``refuse_code`` | a code | ``code`` of in-stream refusals (default ``flex_unavailable``) |
| ``refuse_stream`` | 1 | OpenAI: streaming requests get the 400 unverified organisations get |
| ``flex_fault`` | ``empty``, ``html``, ``close``, ``drop`` | flex ends before any output |
| ``reasoning_time`` | seconds | a silent reasoning phase after the queue, before any output |

In-stream refusals (``flex_refuse`` with ``refuse_in_stream``) answer 200 with the stream's
preamble, wait out the queue, then send an ``error`` event (chat: ``data: {"error": …}``;
Responses: ``event: error`` with a top-level ``code``, as the API reference shows it) or a
Responses ``response.failed`` whose ``response.error.code`` is the refusal code, and end the
stream; a non-streaming request is refused over HTTP as usual. ``refuse_stream`` answers any
streaming OpenAI request, whatever its tier, with OpenAI's exact body (``param: "stream"``,
``code: "unsupported_value"``). ``flex_fault`` applies to flex attempts only, after the queue:
``empty`` is a 200 with no body, ``html`` a 200 ``text/html`` page (a load balancer's),
``close`` a stream that ends cleanly after its preamble, ``drop`` one whose connection is cut
there. ``reasoning_time`` models a reasoning model thinking: nothing for that long after the
queue; on the Responses API a ``response.output_item.added`` of type ``reasoning`` comes first,
its ``output_item.done`` after the silence, as the real API streams it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

HEADER = "x-emulator"
ALWAYS = -1  # ``flex_refuse=always``


class ControlError(ValueError):
    """The control header has an unknown key or a value of the wrong form."""


@dataclass(frozen=True, slots=True)
class Controls:
    """Parsed ``x-emulator`` header; ``None`` means "not given"."""

    flex_queue: float | None = None
    standard_queue: float | None = None
    flex_refuse: int | None = None  # ALWAYS, or a count of attempts
    retry_after: float | None = None
    refuse_status: int | None = None
    tokens: int | None = None
    token_interval: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_12h_tokens: int | None = None
    audio_tokens: int | None = None
    tool_call: bool = False
    refusal: bool = False
    break_after: int | None = None
    serve_tier: str | None = None
    status: int | None = None
    refuse_in_stream: str | None = None  # "error" | "failed"
    refuse_code: str | None = None
    refuse_stream: bool = False
    flex_fault: str | None = None  # "empty" | "html" | "close" | "drop"
    reasoning_time: float | None = None


_TIERS = frozenset({"default", "standard", "flex", "priority"})


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _refuse(text: str) -> int:
    return ALWAYS if text == "always" else _count(text)


def _flag(text: str) -> bool:
    if text not in {"0", "1", "true", "false"}:
        raise ValueError(text)
    return text in {"1", "true"}


def _status(text: str) -> int:
    value = int(text)
    if not 400 <= value <= 599:
        raise ValueError(text)
    return value


def _one_of(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(text)
        return text

    return parse


def _code(text: str) -> str:
    if not text or len(text) > 64 or not all(c.islower() or c == "_" for c in text):
        raise ValueError(text)
    return text


def _tier(text: str) -> str:
    if text not in _TIERS:
        raise ValueError(text)
    return "default" if text == "standard" else text


_PARSERS: dict[str, Callable[[str], Any]] = {
    "flex_queue": _seconds,
    "standard_queue": _seconds,
    "flex_refuse": _refuse,
    "retry_after": _seconds,
    "refuse_status": _status,
    "tokens": _count,
    "token_interval": _seconds,
    "prompt_tokens": _count,
    "cached_tokens": _count,
    "reasoning_tokens": _count,
    "cache_write_tokens": _count,
    "cache_write_12h_tokens": _count,
    "audio_tokens": _count,
    "tool_call": _flag,
    "refusal": _flag,
    "break_after": _count,
    "serve_tier": _tier,
    "status": _status,
    "refuse_in_stream": _one_of("error", "failed"),
    "refuse_code": _code,
    "refuse_stream": _flag,
    "flex_fault": _one_of("empty", "html", "close", "drop"),
    "reasoning_time": _seconds,
}
assert set(_PARSERS) == {f.name for f in fields(Controls)}


def parse_controls(header: str | None) -> Controls | None:
    """Parse the header; ``None`` (header absent or blank) means "use the seeded model"."""
    if header is None or not header.strip():
        return None
    controls = Controls()
    for item in header.split(";"):
        if not item.strip():
            continue
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        parser = _PARSERS.get(key)
        if parser is None or not sep:
            known = ", ".join(_PARSERS)
            raise ControlError(f"x-emulator: unknown control {item.strip()!r}; known: {known}")
        try:
            value = parser(text)
        except ValueError:
            raise ControlError(f"x-emulator: bad value for {key}: {text!r}") from None
        controls = replace(controls, **{key: value})
    return controls
