"""OpenAI ``POST /v1/responses``: the ``response`` object, and its stream of typed events
(``event: <type>`` + ``data: {json}``, each with a ``sequence_number``).

With a reasoning phase (``reasoning_time``) the output starts with a ``reasoning`` item, as a
reasoning model's does: ``response.output_item.added`` with ``{"id": "rs_…", "type":
"reasoning", "summary": []}`` at output index 0 as soon as the queue is over, its
``response.output_item.done`` after the silence, then the message at output index 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flexroute.emulator import openai_common
from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import Reply, dumps
from flexroute.emulator.wire import BadRequestError, Call, Meta, Problem, Script, sse


def _ids(meta: Meta) -> tuple[str, str, str]:
    n = f"{meta.seq:08d}"
    return f"resp_emu{n}", f"msg_emu{n}", f"fc_emu{n}"


def _reasoning_item(meta: Meta) -> dict[str, Any]:
    return {"id": f"rs_emu{meta.seq:08d}", "type": "reasoning", "summary": []}


def usage(reply: Reply) -> dict[str, Any]:
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": reply.cached_tokens,
            "cache_write_tokens": reply.cache_writes,
            **(
                {
                    "cache_write_tokens_details": {
                        "ttl_30m_tokens": reply.cache_write_tokens,
                        "ttl_12h_tokens": reply.cache_write_12h_tokens,
                    }
                }
                if reply.cache_writes
                else {}
            ),
        },
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": reply.total_tokens,
    }


def _item(reply: Reply, meta: Meta, *, done: bool) -> dict[str, Any]:
    _, message_id, call_id = _ids(meta)
    status = "completed" if done else "in_progress"
    if reply.kind == "tool_call":
        return {
            "id": call_id,
            "type": "function_call",
            "status": status,
            "arguments": reply.text if done else "",
            "call_id": f"call_emu{meta.seq:08d}",
            "name": reply.tool_name,
        }
    content = [_part(reply, done=True)] if done else []
    return {
        "id": message_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _part(reply: Reply, *, done: bool) -> dict[str, Any]:
    text = reply.text if done else ""
    if reply.kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _response(reply: Reply, meta: Meta, *, done: bool) -> dict[str, Any]:
    return {
        "id": _ids(meta)[0],
        "object": "response",
        "created_at": meta.created,
        "status": "completed" if done else "in_progress",
        "background": False,
        "completed_at": meta.created if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": meta.model,
        "output": [*_reasoning(meta), _item(reply, meta, done=True)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": "medium" if meta.reasoning else None, "summary": None},
        "safety_identifier": None,
        "service_tier": openai_common.tier_name(meta.tier),
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage(reply) if done else None,
        "user": None,
        "metadata": {},
    }


def _reasoning(meta: Meta) -> list[dict[str, Any]]:
    return [_reasoning_item(meta)] if meta.reasoning else []


class _Events:
    """Numbers events in the order they are made."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(dumps(event), event=kind)


class ResponsesWire:
    """The Responses API wire format."""

    refuse_status = 429
    overload_status = 503

    def read(
        self, body: Mapping[str, Any], params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Call:
        if "input" not in body and "previous_response_id" not in body and "prompt" not in body:
            raise BadRequestError("Missing required parameter: 'input'.")
        return openai_common.read_call(body, stream_usage=False)

    def tier_name(self, tier: Tier) -> str:
        return openai_common.tier_name(tier)

    def headers(self, meta: Meta, *, elapsed_ms: int, error: bool) -> list[tuple[str, str]]:
        return openai_common.headers(meta, elapsed_ms)

    def error(self, status: int, problem: Problem, message: str) -> bytes:
        return openai_common.error_body(status, problem, message)

    def body(self, reply: Reply, meta: Meta) -> bytes:
        return dumps(_response(reply, meta, done=True))

    def script(self, reply: Reply, meta: Meta) -> Script:
        event = _Events()
        preamble = (
            event("response.created", response=_response(reply, meta, done=False)),
            event("response.in_progress", response=_response(reply, meta, done=False)),
        )
        thinking: tuple[bytes, ...] = ()
        opening = b""
        if meta.reasoning:
            item = _reasoning_item(meta)
            thinking = (event("response.output_item.added", output_index=0, item=item),)
            opening = event("response.output_item.done", output_index=0, item=item)
        index = 1 if meta.reasoning else 0
        item_id = _item(reply, meta, done=False)["id"]
        at = {"item_id": item_id, "output_index": index}
        opening += event(
            "response.output_item.added", output_index=index, item=_item(reply, meta, done=False)
        )
        if reply.kind != "tool_call":
            at["content_index"] = 0
            opening += event("response.content_part.added", **at, part=_part(reply, done=False))
        steps = [
            event(self._delta_type(reply), **at, delta=piece, **self._logprobs(reply))
            for piece in reply.pieces
        ]
        if steps:
            steps[0] = opening + steps[0]
        closing = [] if steps else [opening]
        if reply.kind == "tool_call":
            closing.append(
                event(
                    "response.function_call_arguments.done",
                    **at,
                    name=reply.tool_name,
                    arguments=reply.text,
                )
            )
        elif reply.kind == "refusal":
            closing.append(event("response.refusal.done", **at, refusal=reply.text))
        else:
            closing.append(event("response.output_text.done", **at, text=reply.text, logprobs=[]))
        if reply.kind != "tool_call":
            closing.append(event("response.content_part.done", **at, part=_part(reply, done=True)))
        closing.append(
            event(
                "response.output_item.done", output_index=index, item=_item(reply, meta, done=True)
            )
        )
        closing.append(event("response.completed", response=_response(reply, meta, done=True)))
        return Script(
            preamble=preamble, steps=tuple(steps), closing=tuple(closing), thinking=thinking
        )

    def refusal_script(self, reply: Reply, meta: Meta, kind: str, code: str | None) -> Script:
        """A flex refusal inside a 200 stream: ``response.created`` and ``.in_progress``, then
        (after the queue) an ``error`` event — code, message and param at the top level, as the
        API reference shows it — or a ``response.failed`` whose ``response.error`` says why."""
        event = _Events()
        pending = _response(reply, meta, done=False)
        preamble = (
            event("response.created", response=pending),
            event("response.in_progress", response=pending),
        )
        code = code or "flex_unavailable"
        message = openai_common.IN_STREAM_REFUSAL_MESSAGE
        if kind == "failed":
            failed = {**pending, "status": "failed", "error": {"code": code, "message": message}}
            refusal = event("response.failed", response=failed)
        else:
            refusal = event("error", code=code, message=message, param=None)
        return Script(preamble=preamble, steps=(refusal,), closing=())

    @staticmethod
    def _delta_type(reply: Reply) -> str:
        if reply.kind == "tool_call":
            return "response.function_call_arguments.delta"
        if reply.kind == "refusal":
            return "response.refusal.delta"
        return "response.output_text.delta"

    @staticmethod
    def _logprobs(reply: Reply) -> dict[str, Any]:
        return {"logprobs": []} if reply.kind == "text" else {}
