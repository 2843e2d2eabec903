"""OpenAI ``POST /v1/chat/completions``: ``chat.completion`` bodies and ``chat.completion.chunk``
streams (``data: {json}`` events ending in ``data: [DONE]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flexroute.emulator import openai_common
from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import Reply, dumps
from flexroute.emulator.wire import BadRequestError, Call, Meta, Problem, Script, sse

FINGERPRINT = "fp_emulator"
_DONE = b"data: [DONE]\n\n"


def _id(meta: Meta) -> str:
    return f"chatcmpl-emu{meta.seq:08d}"


def _call_id(meta: Meta) -> str:
    return f"call_emu{meta.seq:08d}"


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.kind == "tool_call" else "stop"


def usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": reply.cached_tokens,
            "audio_tokens": 0,
            # chat completions has one write lifetime (30 minutes) and no split
            **({"cache_write_tokens": reply.cache_writes} if reply.cache_writes else {}),
        },
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class ChatWire:
    """The chat-completions wire format."""

    refuse_status = 429
    overload_status = 503

    def read(
        self, body: Mapping[str, Any], params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Call:
        call = openai_common.read_call(body, stream_usage=True)
        if not isinstance(body.get("messages"), list):
            raise BadRequestError("Missing required parameter: 'messages'.")
        return call

    def tier_name(self, tier: Tier) -> str:
        return openai_common.tier_name(tier)

    def headers(self, meta: Meta, *, elapsed_ms: int, error: bool) -> list[tuple[str, str]]:
        return openai_common.headers(meta, elapsed_ms)

    def error(self, status: int, problem: Problem, message: str) -> bytes:
        return openai_common.error_body(status, problem, message)

    def body(self, reply: Reply, meta: Meta) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if reply.kind == "tool_call":
            message["tool_calls"] = [
                {
                    "id": _call_id(meta),
                    "type": "function",
                    "function": {"name": reply.tool_name, "arguments": reply.text},
                }
            ]
        elif reply.kind == "refusal":
            message["refusal"] = reply.text
        else:
            message["content"] = reply.text
        message["annotations"] = []
        return dumps(
            {
                "id": _id(meta),
                "object": "chat.completion",
                "created": meta.created,
                "model": meta.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _finish_reason(reply),
                    }
                ],
                "usage": usage(reply),
                "service_tier": openai_common.tier_name(meta.tier),
                "system_fingerprint": FINGERPRINT,
            }
        )

    def script(self, reply: Reply, meta: Meta) -> Script:
        first = {"role": "assistant", "content": None if reply.kind == "tool_call" else ""}
        first["refusal"] = None
        steps = tuple(
            self._chunk(meta, [_choice(self._delta(reply, meta, i, piece))])
            for i, piece in enumerate(reply.pieces)
        )
        closing = [self._chunk(meta, [_choice({}, _finish_reason(reply))])]
        if meta.include_usage:
            closing.append(self._chunk(meta, [], usage(reply)))
        closing.append(_DONE)
        return Script(
            preamble=(self._chunk(meta, [_choice(first)]),), steps=steps, closing=tuple(closing)
        )

    def refusal_script(self, reply: Reply, meta: Meta, kind: str, code: str | None) -> Script:
        """A flex refusal inside a 200 stream: the role chunk, then (after the queue) an error
        chunk, and the stream ends without ``[DONE]``. Chat has one shape for both kinds."""
        preamble = self.script(reply, meta).preamble
        error = {
            "message": openai_common.IN_STREAM_REFUSAL_MESSAGE,
            "type": "rate_limit_exceeded",
            "param": None,
            "code": code or "flex_unavailable",
        }
        return Script(preamble=preamble, steps=(sse(dumps({"error": error})),), closing=())

    def _delta(self, reply: Reply, meta: Meta, index: int, piece: str) -> dict[str, Any]:
        if reply.kind == "refusal":
            return {"refusal": piece}
        if reply.kind != "tool_call":
            return {"content": piece}
        call: dict[str, Any] = {"index": 0}
        if index == 0:
            call.update(id=_call_id(meta), type="function")
            call["function"] = {"name": reply.tool_name, "arguments": piece}
        else:
            call["function"] = {"arguments": piece}
        return {"tool_calls": [call]}

    def _chunk(
        self, meta: Meta, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": _id(meta),
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "service_tier": openai_common.tier_name(meta.tier),
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if meta.include_usage:
            chunk["usage"] = usage
        return sse(dumps(chunk))


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
