"""What a request asks the answer to be: a forced tool call, or JSON in a given shape.

Read from each wire format's own fields (they do not collide, so one reader serves all).

JSON:
- OpenAI chat: ``response_format`` ``json_object`` or ``json_schema``;
- OpenAI Responses: ``text.format``, the same two types;
- Gemini: ``generationConfig.responseMimeType: application/json`` with ``responseSchema`` or
  ``responseJsonSchema`` (``text/x.enum``: one enum value as text); Interactions:
  ``response_format`` with ``response_mime_type``;
- Anthropic: ``output_format`` or ``output_config.format`` of type ``json_schema``.

A tool call:
- OpenAI: ``tool_choice`` ``required``, a named function, or ``allowed_tools`` ``required``;
- Gemini: ``toolConfig.functionCallingConfig.mode: ANY`` (``allowedFunctionNames``);
- Anthropic: ``tool_choice`` ``any`` or ``tool``.

``tool_choice`` ``auto`` (or none given) leaves the choice to the model, which the emulator
makes by answering text: a test asks for a call with the ``tool_call=1`` control instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["JSON_OBJECT", "OutputFormat", "Tool", "declared_tools", "forced_tool", "output_format"]

JSON_OBJECT: Mapping[str, Any] = {"type": "object"}
_JSON = "application/json"
_ENUM = "text/x.enum"


@dataclass(frozen=True, slots=True)
class Tool:
    """A declared function: its name and the JSON Schema of its arguments (None: not given)."""

    name: str
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """JSON matching ``schema`` (``JSON_OBJECT`` for plain JSON mode); ``enum``: Gemini's
    ``text/x.enum``, one of the schema's values as bare text."""

    schema: Mapping[str, Any]
    enum: bool = False


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _get(body: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present (Gemini accepts camelCase and snake_case alike)."""
    return next((body[n] for n in names if n in body), None)


def declared_tools(body: Mapping[str, Any]) -> list[Tool]:
    """Every function tool the request declares, in order (built-in tools skipped)."""
    tools = body.get("tools")
    return list(_tools(tools)) if isinstance(tools, list) else []


def _tools(tools: list[Any]) -> Iterator[Tool]:
    for entry in tools:
        if not isinstance(entry, Mapping):
            continue
        function = entry.get("function")
        declarations = _get(entry, "functionDeclarations", "function_declarations")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            yield Tool(function["name"], _schema(function.get("parameters")))  # chat
        elif isinstance(declarations, list):  # Gemini
            for d in declarations:
                if isinstance(d, Mapping) and isinstance(d.get("name"), str):
                    raw = _get(d, "parametersJsonSchema", "parameters_json_schema", "parameters")
                    yield Tool(d["name"], _schema(raw))
        elif isinstance(entry.get("name"), str) and (
            entry.get("type") in (None, "function")
            or (entry.get("type") == "custom" and "input_schema" in entry)
        ):
            # Responses (``parameters``) or Anthropic (``input_schema``); Anthropic's server
            # tools and Responses' custom tools take no JSON arguments and are skipped
            raw = entry.get("parameters", entry.get("input_schema"))
            yield Tool(entry["name"], _schema(raw))


def _schema(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def forced_tool(body: Mapping[str, Any]) -> Tool | None:
    """The tool the request obliges the model to call, if it obliges one."""
    tools = declared_tools(body)
    name, forced = _choice(body)
    if not forced:
        return None
    if name is None:
        return tools[0] if tools else None
    return next((t for t in tools if t.name == name), Tool(name))


def _choice(body: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(the tool named, whether a call is obliged), from ``tool_choice`` or Gemini's config."""
    choice = body.get("tool_choice")
    if choice == "required":
        return None, True
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "function":  # chat nests the name, Responses does not
            name = _mapping(choice.get("function")).get("name", choice.get("name"))
            return (name if isinstance(name, str) else None), True
        if kind == "tool":  # Anthropic
            name = choice.get("name")
            return (name if isinstance(name, str) else None), True
        if kind == "any":  # Anthropic
            return None, True
        if kind == "allowed_tools":  # chat nests the list, Responses does not
            allowed = _mapping(choice.get("allowed_tools")) or choice
            if allowed.get("mode") == "required":
                return _first_named(allowed.get("tools")), True
    config = _mapping(_get(body, "toolConfig", "tool_config"))
    calling = _mapping(_get(config, "functionCallingConfig", "function_calling_config"))
    if str(calling.get("mode", "")).upper() == "ANY":
        names = _get(calling, "allowedFunctionNames", "allowed_function_names")
        first = names[0] if isinstance(names, list) and names else None
        return (first if isinstance(first, str) else None), True
    return None, False


def _first_named(tools: object) -> str | None:
    if not isinstance(tools, list):
        return None
    for tool in tools:
        for entry in (_mapping(tool), _mapping(_mapping(tool).get("function"))):
            if isinstance(entry.get("name"), str):
                return str(entry["name"])
    return None


def output_format(body: Mapping[str, Any]) -> OutputFormat | None:
    """The JSON the request asks the answer to be, if any."""
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema", "text"):
        return _typed(fmt, _mapping(fmt.get("json_schema")).get("schema"))  # chat
    text_format = _mapping(_mapping(body.get("text")).get("format"))
    if text_format:
        return _typed(text_format, text_format.get("schema"))  # Responses
    config = _mapping(_get(body, "generationConfig", "generation_config"))
    if config:
        return _gemini(config, "responseMimeType", "response_mime_type")
    if body.get("response_mime_type") or body.get("response_format"):
        return _gemini(body, "response_mime_type")  # Interactions
    for anthropic in (body.get("output_format"), _mapping(body.get("output_config")).get("format")):
        if isinstance(anthropic, Mapping):
            return _typed(anthropic, anthropic.get("schema"))
    return None


def _typed(fmt: Mapping[str, Any], schema: object) -> OutputFormat | None:
    if fmt.get("type") == "json_object":
        return OutputFormat(JSON_OBJECT)
    if fmt.get("type") == "json_schema":
        return OutputFormat(schema if isinstance(schema, Mapping) else JSON_OBJECT)
    return None


def _gemini(config: Mapping[str, Any], *mime_names: str) -> OutputFormat | None:
    mime = str(_get(config, *mime_names) or "")
    schema = _get(
        config,
        "responseJsonSchema",
        "response_json_schema",
        "responseSchema",
        "response_schema",
        "response_format",
    )
    if mime == _ENUM and isinstance(schema, Mapping):
        return OutputFormat(schema, enum=True)
    if mime != _JSON:
        return None
    return OutputFormat(schema if isinstance(schema, Mapping) else JSON_OBJECT)
