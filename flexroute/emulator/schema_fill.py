"""A minimal instance of a JSON Schema: what the emulated model answers when a request asks for
structured output or forces a tool call.

Pure and deterministic. It covers the schemas clients really send: pydantic's
``model_json_schema()`` (``$defs``/``$ref``, ``anyOf`` for optional fields and unions, ``enum``
and ``const`` for literals, ``prefixItems`` for tuples, ``allOf`` around a ``$ref``), OpenAI's
strict schemas, and Gemini's OpenAPI subset (upper-case ``type`` names, ``nullable``).

"Minimal": objects get their required properties only (and more only to reach
``minProperties``), arrays ``minItems`` items (one when unbounded, so nested shapes show),
numbers the value nearest 0 inside their bounds, strings a short word fitted to ``format``,
``minLength`` and ``maxLength``. Past ``_DEEP`` levels of nesting, a choice prefers a branch
that ends the recursion (``null``, an empty array); past ``_LIMIT`` the schema is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaError", "instance"]

_DEEP = 6
_LIMIT = 40
_WORD = "flex"
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "duration": "PT1S",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "byte": "",  # OpenAPI: base64
    "binary": "",
}
# Tried in order when a pattern rejects the usual word.
_PATTERN_GUESSES = ("", "a", "A", "0", "a0", "A0", "aa", "00", "a-a", "a_a", "a.a", "flex-0")
_NAMES = ("object", "array", "string", "integer", "number", "boolean", "null")


class SchemaError(ValueError):
    """The schema has no instance the filler can find (``false``, a loop with no way out)."""


def instance(schema: object) -> Any:
    """A value that validates against ``schema`` (a JSON Schema as decoded JSON)."""
    return _Filler(schema).fill(schema, 0, 0)


class _Filler:
    def __init__(self, root: object) -> None:
        self.root = root

    def fill(self, schema: object, depth: int, variant: int) -> Any:
        if depth > _LIMIT:
            raise SchemaError("the schema nests too deep to fill (a required self-reference?)")
        if schema is True:
            return {}
        if schema is False or not isinstance(schema, Mapping):
            raise SchemaError(f"no instance matches the schema {schema!r}")
        schema = self._flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[variant % len(enum)]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                rest = {k: v for k, v in schema.items() if k != key}
                return self.fill({**rest, **self._pick(options, depth)}, depth + 1, variant)
        kind = _kind(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return _string(schema, variant)
        if kind in ("integer", "number"):
            return _number(schema, variant, integer=kind == "integer")
        if kind == "boolean":
            return variant % 2 == 1
        return None

    def _flatten(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        """The schema with its ``$ref`` resolved and its ``allOf`` merged in."""
        out = dict(schema)
        ref = out.pop("$ref", None)
        if isinstance(ref, str):
            target = self._resolve(ref)
            if not isinstance(target, Mapping):
                raise SchemaError(f"$ref {ref!r} does not point at a schema")
            out = {**self._flatten(target, depth + 1), **out}
        parts = out.pop("allOf", None)
        if isinstance(parts, list):
            for part in parts:
                if isinstance(part, Mapping):
                    out = _merge(out, self._flatten(part, depth + 1))
        return out

    def _resolve(self, ref: str) -> object:
        if not ref.startswith("#"):
            return {}  # a remote schema: nothing here to say what it wants
        node: object = self.root
        for token in ref[1:].lstrip("/").split("/") if ref != "#" else ():
            key = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise SchemaError(f"$ref {ref!r} points nowhere")
        return node

    def _pick(self, options: list[Any], depth: int) -> dict[str, Any]:
        """The first concrete branch; deep down, the first one that ends the recursion."""
        branches = [self._flatten(o, depth + 1) for o in options if isinstance(o, Mapping)]
        if not branches:
            raise SchemaError("anyOf/oneOf without a schema to choose")
        if depth >= _DEEP:
            for branch in branches:
                if _kind(branch) == "null" or "$ref" not in str(branch):
                    return branch
        concrete = [b for b in branches if _kind(b) != "null"]
        return (concrete or branches)[0]

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        ordered = [n for n in properties if n in names] + [n for n in names if n not in properties]
        wanted = schema.get("minProperties")
        if isinstance(wanted, int):
            ordered += [n for n in properties if n not in ordered][: max(0, wanted - len(ordered))]
        out: dict[str, Any] = {}
        for name in ordered:
            out[name] = self.fill(properties.get(name, {}), depth + 1, 0)
        if isinstance(wanted, int) and len(out) < wanted:
            extra = schema.get("additionalProperties", True)
            for i in range(len(out), wanted):
                out[f"{_WORD}{i}"] = self.fill(extra, depth + 1, i)
        return out

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuples
            prefix, items = items, schema.get("additionalItems", {})
        low = schema.get("minItems")
        high = schema.get("maxItems")
        low = low if isinstance(low, int) else 0
        count = max(low, len(prefix), 0 if depth >= _DEEP else 1)
        if isinstance(high, int):
            count = min(count, high)
        out = [self.fill(s, depth + 1, i) for i, s in enumerate(prefix[:count])]
        out += [self.fill(items, depth + 1, i) for i in range(len(out), count)]
        return out


def _kind(schema: Mapping[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, list):
        names = [str(t).lower() for t in declared]
        declared = next((t for t in names if t != "null"), names[0] if names else None)
    if isinstance(declared, str) and declared.lower() in _NAMES:
        return declared.lower()
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if {"minLength", "maxLength", "pattern", "format"} & schema.keys():
        return "string"
    if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & schema.keys():
        return "number"
    return "object" if not schema.keys() - _ANNOTATIONS else None


_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$defs"})


def _merge(left: dict[str, Any], right: Mapping[str, Any]) -> dict[str, Any]:
    out = {**right, **left}
    for key in ("properties", "$defs"):
        if isinstance(left.get(key), Mapping) and isinstance(right.get(key), Mapping):
            out[key] = {**right[key], **left[key]}
    if isinstance(left.get("required"), list) and isinstance(right.get("required"), list):
        out["required"] = [*right["required"], *left["required"]]
    return out


def _string(schema: Mapping[str, Any], variant: int) -> str:
    text = _FORMATS.get(str(schema.get("format", "")), _WORD)
    if variant and text == _WORD:
        text = f"{_WORD}{variant}"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text += "x" * (low - len(text))
    if isinstance(high, int):
        text = text[:high]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matcher = re.compile(pattern)
        except re.error:
            return text
        if not matcher.search(text):
            fits = (g for g in _PATTERN_GUESSES if matcher.search(g) and _fits(g, low, high))
            text = next(fits, text)
    return text


def _fits(text: str, low: object, high: object) -> bool:
    return (not isinstance(low, int) or len(text) >= low) and (
        not isinstance(high, int) or len(text) <= high
    )


def _number(schema: Mapping[str, Any], variant: int, *, integer: bool) -> int | float:
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum")
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum")
    step = schema.get("multipleOf")
    step = step if isinstance(step, int | float) and not isinstance(step, bool) and step > 0 else 0
    if integer:
        step = max(1, math.ceil(step)) if step and step == int(step) else (step or 1)
    value: float = variant * (step or 1)
    if low is not None and (value < low or (low_open and value == low)):
        value = low
        if step:
            value = math.ceil(low / step) * step
            if low_open and value == low:
                value += step
        elif low_open:
            value = math.floor(low) + 1 if integer else low + _gap(low, high)
    if high is not None and (value > high or (high_open and value == high)):
        value = high
        if step:
            value = math.floor(high / step) * step
            if high_open and value == high:
                value -= step
        elif high_open:
            value = math.ceil(high) - 1 if integer else high - _gap(low, high)
    if integer or float(value).is_integer():
        return int(value)
    return value


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    open_value = schema.get(exclusive)
    closed = schema.get(inclusive)
    if isinstance(open_value, bool):  # draft 4: a flag on ``minimum``/``maximum``
        return (closed if _numeric(closed) else None), open_value
    if _numeric(open_value):
        return open_value, True
    return (closed if _numeric(closed) else None), False


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _gap(low: float | None, high: float | None) -> float:
    if low is not None and high is not None:
        return (high - low) / 2
    return 1.0
