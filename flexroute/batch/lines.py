"""Batch files: input lines in, output lines out, in the providers' own Batch API formats.

Pure and synchronous. Two input shapes, told apart line by line:

- **OpenAI** (Batch API input): ``{"custom_id", "method": "POST", "url", "body"}`` for
  ``/v1/chat/completions``, ``/v1/responses`` and ``/v1/embeddings``. Output: the Batch API's
  per-line object ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
  "error"}``: ``response`` for every HTTP answer (a 4xx/5xx too, as in OpenAI's error file),
  ``error: {"code", "message"}`` with ``response: null`` for a request that got no HTTP answer
  (a bad input line, an unreachable provider).
- **Gemini** (batch mode input file): ``{"key", "request"}`` where ``request`` is a
  ``GenerateContentRequest``; the model is ``request.model`` (``models/…`` or bare) or the
  ``--model`` option. Output: ``{"key", "response": GenerateContentResponse}`` or
  ``{"key", "error": {"code", "message", "status"}}`` (a ``google.rpc.Status``).

``id`` is ``batch_req_`` plus the hex of flexroute's request id, so ``flexroute request
frq_<hex>`` finds a line's ledger record. Output lines come in order of completion, not input
order: match them by ``custom_id``/``key``, as the providers' own docs say.
"""

from __future__ import annotations

import enum
import json
import secrets
from dataclasses import dataclass
from typing import Any

from flexroute.providers import GEMINI, OPENAI, Provider

__all__ = ["BadLine", "Job", "Shape", "error_line", "parse_line", "reply_line"]

OPENAI_URLS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings")


class Shape(enum.Enum):
    """Whose batch format a line is in (and so its output line)."""

    OPENAI = "openai"
    GEMINI = "gemini"


@dataclass(frozen=True, slots=True)
class Job:
    """One request of the batch, ready for the engine."""

    line_no: int
    custom_id: str  # OpenAI's custom_id, Gemini's key
    shape: Shape
    provider: Provider
    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class BadLine:
    """An input line that cannot be sent; ``custom_id`` when the line named one."""

    line_no: int
    message: str
    custom_id: str | None = None
    shape: Shape | None = None

    def report(self) -> str:
        return f"line {self.line_no}: {self.message}"


def parse_line(line_no: int, text: bytes, model: str | None = None) -> Job | BadLine | None:
    """The job on one input line; None for a blank line."""
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        return BadLine(line_no, f"not JSON ({error}); each line is one JSON object")
    if not isinstance(obj, dict):
        return BadLine(line_no, f"a JSON {type(obj).__name__}, not an object")
    if "custom_id" in obj or "url" in obj:
        return _openai(line_no, obj)
    if "key" in obj or "request" in obj:
        return _gemini(line_no, obj, model)
    return BadLine(
        line_no,
        "neither an OpenAI Batch line (custom_id, method, url, body) nor a Gemini batch line "
        f"(key, request); it has {sorted(obj)[:6]}",
    )


def _openai(line_no: int, obj: dict[str, Any]) -> Job | BadLine:
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return BadLine(line_no, f"custom_id must be a non-empty string, got {_show(custom_id)}")

    def bad(message: str) -> BadLine:
        return BadLine(line_no, message, custom_id, Shape.OPENAI)

    method, url, body = obj.get("method"), obj.get("url"), obj.get("body")
    if method != "POST":
        return bad(f'method must be "POST", got {_show(method)}')
    if url not in OPENAI_URLS:
        return bad(f"url {_show(url)} is not one of {', '.join(OPENAI_URLS)}")
    if not isinstance(body, dict):
        return bad(f"body must be a JSON object (the request body), got {_show(body)}")
    if body.get("stream") is True:
        return bad('body.stream is true: batch answers are whole bodies; remove "stream"')
    return Job(line_no, custom_id, Shape.OPENAI, OPENAI, url, _dumps(body))


def _gemini(line_no: int, obj: dict[str, Any], model: str | None) -> Job | BadLine:
    key = obj.get("key")
    if not isinstance(key, str) or not key:
        return BadLine(line_no, f"key must be a non-empty string, got {_show(key)}")

    def bad(message: str) -> BadLine:
        return BadLine(line_no, message, key, Shape.GEMINI)

    request = obj.get("request")
    if not isinstance(request, dict):
        return bad(f"request must be a GenerateContentRequest object, got {_show(request)}")
    request = dict(request)
    named = request.pop("model", None)
    if named is not None and (not isinstance(named, str) or not named.removeprefix("models/")):
        return bad(f'request.model must be "models/NAME" or "NAME", got {_show(named)}')
    chosen = named.removeprefix("models/") if isinstance(named, str) else model
    if chosen is None:
        return bad("no model: give --model NAME, or request.model in the line")
    if "/" in chosen or ":" in chosen:
        return bad(f"model {_show(chosen)} must be a bare model name such as gemini-2.5-flash")
    path = f"/v1beta/models/{chosen}:generateContent"
    return Job(line_no, key, Shape.GEMINI, GEMINI, path, _dumps(request))


def reply_line(
    job: Job, status: int, body: bytes, request_id: str, provider_id: str | None
) -> bytes:
    """The output line for an HTTP answer (any status)."""
    try:
        parsed: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = body.decode("utf-8", "replace")
    if job.shape is Shape.GEMINI:
        if 200 <= status < 300:
            return _line({"key": job.custom_id, "response": parsed})
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(error, dict):
            error = {"code": status, "message": str(parsed)[:2000], "status": "UNKNOWN"}
        return _line({"key": job.custom_id, "error": error})
    response = {"status_code": status, "request_id": provider_id or request_id, "body": parsed}
    return _line({"id": _batch_id(request_id), "custom_id": job.custom_id,
                  "response": response, "error": None})  # fmt: skip


def error_line(
    custom_id: str, shape: Shape, code: str, message: str, request_id: str | None = None
) -> bytes:
    """The output line for a request that got no HTTP answer (``code`` as OpenAI's are:
    ``invalid_request``, ``upstream_unreachable``)."""
    if shape is Shape.GEMINI:
        status = "INVALID_ARGUMENT" if code == "invalid_request" else "UNAVAILABLE"
        http = 400 if code == "invalid_request" else 503
        error = {"code": http, "message": message, "status": status}
        return _line({"key": custom_id, "error": error})
    return _line({"id": _batch_id(request_id), "custom_id": custom_id, "response": None,
                  "error": {"code": code, "message": message}})  # fmt: skip


def written_id(text: bytes) -> str | None:
    """The custom_id (or key) of an output line, None when it names none."""
    obj = json.loads(text)
    if not isinstance(obj, dict):
        return None
    found = obj.get("custom_id", obj.get("key"))
    return found if isinstance(found, str) else None


def _batch_id(request_id: str | None) -> str:
    hex_part = request_id.removeprefix("frq_") if request_id else secrets.token_hex(12)
    return f"batch_req_{hex_part}"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "nothing"
    return text if len(text) <= 60 else f"{text[:57]}..."
