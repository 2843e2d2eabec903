"""What the emulated model says: deterministic text, tool-call or refusal pieces, and usage.

Every wire format renders the same ``Reply``; only the framing differs. A request that asks for
JSON (``structured.output_format``) gets text that parses and matches its schema; one that
forces a tool call (``structured.forced_tool``), or the ``tool_call=1`` control, gets a call
whose arguments match the tool's parameters (``schema_fill.instance``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flexroute.emulator import structured
from flexroute.emulator.capacity import Plan
from flexroute.emulator.schema_fill import SchemaError, instance

_WORDS = (
    "Flex",
    "capacity",
    "is",
    "cheaper",
    "when",
    "the",
    "queue",
    "is",
    "short",
    "and",
    "standard",
    "capacity",
    "answers",
    "when",
    "it",
    "is",
    "not",
)
_REFUSAL = "I'm sorry, but I can't help with that request."
_DEFAULT_TOOL = "get_weather"
_TOOL_ARGUMENTS = '{"location":"Paris, France","unit":"celsius"}'
_LABELS = frozenset({"role", "type", "id", "name", "mimeType", "cache_control"})
_PROMPT_FIELDS = ("messages", "input", "instructions", "contents", "system", "systemInstruction")


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: its pieces (one per streamed delta) and the usage to report."""

    kind: str  # "text" | "tool_call" | "refusal"
    pieces: tuple[str, ...]
    prompt_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    tool_name: str = _DEFAULT_TOOL
    cache_write_tokens: int = 0  # OpenAI: 30-minute writes, part of prompt_tokens
    cache_write_12h_tokens: int = 0  # OpenAI: 12-hour writes, part of prompt_tokens
    audio_tokens: int = 0  # Gemini: the prompt's AUDIO part

    @property
    def cache_writes(self) -> int:
        return self.cache_write_tokens + self.cache_write_12h_tokens

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def visible_tokens(self) -> int:
        return len(self.pieces)

    @property
    def output_tokens(self) -> int:
        """Output tokens billed: visible pieces plus reasoning (as OpenAI counts them)."""
        return len(self.pieces) + self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def build_reply(plan: Plan, body: Mapping[str, Any]) -> Reply:
    n = plan.tokens
    kind, name = plan.answer, tool_name(body)
    forced = structured.forced_tool(body) if kind == "text" else None
    shape = structured.output_format(body) if kind == "text" else None
    if kind == "tool_call" or forced is not None:
        tool = forced or next(iter(structured.declared_tools(body)), None)
        kind, name = "tool_call", tool.name if tool else _DEFAULT_TOOL
        pieces = _split(tool_arguments(tool), max(1, n))
    elif kind == "refusal":
        words = _REFUSAL.split(" ")
        pieces = tuple(w if i == len(words) - 1 else f"{w} " for i, w in enumerate(words))
    elif shape is not None:
        pieces = _split(structured_text(shape, n), max(1, n))
    else:
        pieces = _words(n)
    prompt = estimate_prompt_tokens(body) if plan.prompt_tokens is None else plan.prompt_tokens
    cached = min(plan.cached_tokens, prompt)
    twelve_hours = min(plan.cache_write_12h_tokens, prompt - cached)
    return Reply(
        kind=kind,
        pieces=pieces,
        prompt_tokens=prompt,
        cached_tokens=cached,
        reasoning_tokens=plan.reasoning_tokens,
        tool_name=name,
        cache_write_tokens=min(plan.cache_write_tokens, prompt - cached - twelve_hours),
        cache_write_12h_tokens=twelve_hours,
        audio_tokens=min(plan.audio_tokens, prompt),
    )


def _words(n: int) -> tuple[str, ...]:
    return tuple(_WORDS[i % len(_WORDS)] + ("." if i == n - 1 else " ") for i in range(n))


def tool_arguments(tool: structured.Tool | None) -> str:
    """Arguments (JSON text) for a call to ``tool``: the sample weather arguments when its
    parameters name no properties, else the minimal instance of its parameters' schema."""
    schema = tool.parameters if tool else None
    if not schema or not (schema.get("properties") or schema.get("required")):
        return _TOOL_ARGUMENTS
    try:
        return json.dumps(instance(schema), separators=(",", ":"), ensure_ascii=False)
    except SchemaError:
        return "{}"


def structured_text(shape: structured.OutputFormat, n: int) -> str:
    """The answer as JSON matching ``shape`` (plain JSON mode: the usual words, wrapped)."""
    if shape.schema is structured.JSON_OBJECT:
        return json.dumps({"answer": "".join(_words(max(1, n)))}, separators=(",", ":"))
    try:
        value = instance(shape.schema)
    except SchemaError:
        value = {}
    if shape.enum:
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _split(text: str, parts: int) -> tuple[str, ...]:
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return tuple(out)


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """About four characters a token over the prompt's text (not its labels), at least one."""
    chars = sum(len(s) for key in _PROMPT_FIELDS for s in _strings(body.get(key)))
    return max(1, chars // 4)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key not in _LABELS:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def tool_name(body: Mapping[str, Any]) -> str:
    """The first declared function's name (OpenAI, Gemini or Anthropic shape), if any."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], Mapping):
        return _DEFAULT_TOOL
    first = tools[0]
    function = first.get("function")
    if isinstance(function, Mapping) and isinstance(function.get("name"), str):
        return str(function["name"])
    if isinstance(first.get("name"), str):
        return str(first["name"])
    declarations = first.get("functionDeclarations") or first.get("function_declarations")
    if isinstance(declarations, list) and declarations and isinstance(declarations[0], Mapping):
        return str(declarations[0].get("name", _DEFAULT_TOOL))
    return _DEFAULT_TOOL


def dumps(obj: object) -> bytes:
    """Compact JSON, as the providers send it (a lone surrogate echoed back escaped)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()
