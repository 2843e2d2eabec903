"""OpenAI ``POST /v1/chat/completions``.

*Started* is the first chunk with a content, tool-call, function-call or refusal delta, or a
finish reason (a complete answer with no text). The role-only first chunk is not a start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flexroute.dialects._openai import OpenAIDialect, chat_usage
from flexroute.dialects.base import (
    JSONDict,
    Observer,
    Pieces,
    ResponseFacts,
    answer_object,
    check_event_data,
    dumps,
    event_object,
    objects,
)
from flexroute.dialects.sse import SSEEvent, encode_event

_USAGE_NULL = b',"usage":null'


class ChatDialect(OpenAIDialect):
    name = "openai-chat"

    def _asks_usage(self, body: JSONDict) -> bool:
        options = body.get("stream_options")
        return isinstance(options, Mapping) and options.get("include_usage") is True

    def _ask_usage(self, body: JSONDict) -> None:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, Mapping) else {})}
        body["stream_options"]["include_usage"] = True

    def read_response(self, body: bytes, headers: Mapping[str, str]) -> ResponseFacts:
        obj = answer_object(body, headers)
        objects(obj.get("choices"), "choices")
        return ResponseFacts(
            chat_usage(obj.get("usage")), self.tier_from_wire(obj.get("service_tier"))
        )

    def observer(
        self, *, wants_usage: bool, assemble: bool, headers: Mapping[str, str]
    ) -> Observer:
        return ChatObserver(self, wants_usage=wants_usage, assemble=assemble)

    def stream_error(self, message: str, code: str) -> bytes:
        return encode_event(dumps({"error": self._error_payload(message, code)}).decode())


class ChatObserver(Observer):
    def __init__(self, dialect: ChatDialect, *, wants_usage: bool, assemble: bool) -> None:
        self._dialect = dialect
        self._wants_usage = wants_usage
        self._assembler = ChatAssembler() if assemble else None

    def is_terminal(self, event: SSEEvent) -> bool:
        return event.data == "[DONE]"

    def observe(self, event: SSEEvent) -> bytes | None:
        if event.data == "[DONE]":
            self.finished = True
            return event.raw
        relayed = self._unread(event)
        if relayed is not None:
            return relayed
        chunk = event_object(event)
        if chunk is None:
            return event.raw
        if "error" in chunk:
            self.failure = chunk["error"] if isinstance(chunk["error"], dict) else {}
            return event.raw
        tier = self._dialect.tier_from_wire(chunk.get("service_tier"))
        if tier is not None:
            self.tier_served = tier
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = chat_usage(usage)
        choices = objects(chunk.get("choices"), "choices")
        if not self.started:
            self.started = any(_is_output(choice) for choice in choices)
        if self._assembler is not None:
            self._assembler.add(chunk)
        if self._wants_usage or "usage" not in chunk:
            return event.raw
        if usage is not None:
            # The usage-only chunk flexroute asked for: the client did not.
            return None if not choices else encode_event(_without_usage(chunk))
        if event.raw.count(_USAGE_NULL) == 1:
            return event.raw.replace(_USAGE_NULL, b"")
        return encode_event(_without_usage(chunk))

    def _unread(self, event: SSEEvent) -> bytes | None:
        """A chunk of a started stream relayed without parsing it (None: parse it). Once the
        attempt has started and its tier is known, a chunk with no ``error`` and no usage
        tells the engine nothing; only the last ones carry usage. A chunk that only might —
        the word ``"usage"`` anywhere in it — is parsed."""
        if not self.started or self._assembler is not None or self.tier_served is None:
            return None
        data = event.data
        if '"error"' in data:
            return None
        mentions = data.count('"usage"')
        if mentions == 0:
            check_event_data(event)
            return event.raw
        if mentions == 1 and '"usage":null' in data and event.raw.count(_USAGE_NULL) == 1:
            check_event_data(event)  # the null usage flexroute's stream_options put there
            return event.raw if self._wants_usage else event.raw.replace(_USAGE_NULL, b"")
        return None

    def assemble(self) -> bytes:
        assert self._assembler is not None, "observer was created without assemble=True"
        return dumps(self._assembler.body())


def _is_output(choice: object) -> bool:
    if not isinstance(choice, Mapping):
        return False
    if choice.get("finish_reason"):
        return True
    delta = choice.get("delta")
    if not isinstance(delta, Mapping):
        return False
    return bool(
        delta.get("content")
        or delta.get("tool_calls")
        or delta.get("refusal")
        or delta.get("function_call")
        or delta.get("audio")
    )


def _without_usage(chunk: JSONDict) -> str:
    return dumps({k: v for k, v in chunk.items() if k != "usage"}).decode()


class ChatAssembler:
    """Builds a ``chat.completion`` object from ``chat.completion.chunk`` objects."""

    def __init__(self) -> None:
        self._head: JSONDict = {}
        self._choices: dict[int, JSONDict] = {}
        self._usage: Any = None

    def add(self, chunk: JSONDict) -> None:
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if key in chunk and chunk[key] is not None:
                self._head[key] = chunk[key]
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, Mapping):
                self._add_choice(choice)

    def _add_choice(self, choice: Mapping[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self._choices.setdefault(
            index,
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": {},
                "function_call": None,
                "annotations": None,
                "logprobs": None,
                "finish_reason": None,
            },
        )
        if choice.get("finish_reason") is not None:
            state["finish_reason"] = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping):
            merged = state["logprobs"] or {"content": None, "refusal": None}
            for key in ("content", "refusal"):
                if isinstance(logprobs.get(key), list):
                    merged[key] = merged[key] or []
                    merged[key].extend(logprobs[key])  # in place: linear in the answer
            state["logprobs"] = merged
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return
        if delta.get("role"):
            state["role"] = delta["role"]
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str):
                _append_text(state, key, delta[key])
        if isinstance(delta.get("annotations"), list) and delta["annotations"]:
            state["annotations"] = state["annotations"] or []
            state["annotations"].extend(delta["annotations"])
        if isinstance(delta.get("function_call"), Mapping):
            state["function_call"] = _merge_call(state["function_call"], delta["function_call"])
        for call in delta.get("tool_calls") or []:
            if isinstance(call, Mapping):
                slot = call.get("index", 0)
                state["tool_calls"][slot] = _merge_tool_call(state["tool_calls"].get(slot), call)

    def body(self) -> JSONDict:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: JSONDict = {
                "role": state["role"],
                "content": state["content"],
                "refusal": state["refusal"],
            }
            if state["annotations"] is not None:
                message["annotations"] = state["annotations"]
            if state["tool_calls"]:
                message["tool_calls"] = [
                    state["tool_calls"][k] for k in sorted(state["tool_calls"])
                ]
            if state["function_call"] is not None:
                message["function_call"] = state["function_call"]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": state["logprobs"],
                    "finish_reason": state["finish_reason"],
                }
            )
        body: JSONDict = {
            "id": self._head.get("id"),
            "object": "chat.completion",
            "created": self._head.get("created"),
            "model": self._head.get("model"),
            "choices": choices,
            "usage": self._usage,
        }
        for key in ("service_tier", "system_fingerprint"):
            if key in self._head:
                body[key] = self._head[key]
        return body


def _append_text(target: JSONDict, key: str, text: str) -> None:
    """Add a delta's text to ``target[key]`` (None or :class:`Pieces`), in linear time."""
    if target[key] is None:
        target[key] = Pieces(text)
    else:
        target[key].add(text)


def _merge_call(current: JSONDict | None, delta: Mapping[str, Any]) -> JSONDict:
    merged = current or {"name": Pieces(), "arguments": Pieces()}
    for key in ("name", "arguments"):
        if isinstance(delta.get(key), str):
            _append_text(merged, key, delta[key])
    return merged


def _merge_tool_call(current: JSONDict | None, delta: Mapping[str, Any]) -> JSONDict:
    merged = current or {
        "id": None,
        "type": "function",
        "function": {"name": Pieces(), "arguments": Pieces()},
    }
    if delta.get("id"):
        merged["id"] = delta["id"]
    if delta.get("type"):
        merged["type"] = delta["type"]
    if isinstance(delta.get("function"), Mapping):
        merged["function"] = _merge_call(merged["function"], delta["function"])
    return merged
