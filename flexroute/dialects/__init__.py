"""One module per provider wire format; :func:`dialect_for` picks the one for a request path."""

from __future__ import annotations

from flexroute.dialects.base import Dialect, ErrorKind, Observer, RequestFacts, ResponseFacts
from flexroute.dialects.openai_chat import ChatDialect
from flexroute.dialects.openai_responses import ResponsesDialect

__all__ = [
    "Dialect",
    "ErrorKind",
    "Observer",
    "RequestFacts",
    "ResponseFacts",
    "dialect_for",
]

_CHAT = ChatDialect()
_RESPONSES = ResponsesDialect()
_BY_PATH: dict[str, Dialect] = {
    "/v1/chat/completions": _CHAT,
    "/v1/responses": _RESPONSES,
}


def dialect_for(method: str, path: str) -> Dialect | None:
    """The dialect flexroute routes for ``method path``; None means forward unchanged."""
    if method != "POST":
        return None
    return _BY_PATH.get(path)
