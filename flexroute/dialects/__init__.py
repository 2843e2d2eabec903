"""One module per provider wire format; :func:`dialect_for` picks the one for a request."""

from __future__ import annotations

from flexroute.dialects.anthropic import AnthropicDialect
from flexroute.dialects.base import Dialect, ErrorKind, Observer, RequestFacts, ResponseFacts
from flexroute.dialects.gemini import GeminiDialect, is_gemini_path
from flexroute.dialects.openai_chat import ChatDialect
from flexroute.dialects.openai_responses import ResponsesDialect

__all__ = [
    "Dialect",
    "ErrorKind",
    "Observer",
    "RequestFacts",
    "ResponseFacts",
    "dialect_for",
    "error_dialect",
    "provider_for",
]

CHAT = ChatDialect()
RESPONSES = ResponsesDialect()
GEMINI = GeminiDialect()
ANTHROPIC = AnthropicDialect()
_BY_PATH: dict[str, Dialect] = {
    "/v1/chat/completions": CHAT,
    "/v1/responses": RESPONSES,
    "/v1/messages": ANTHROPIC,
}
_ERRORS: dict[str, Dialect] = {"openai": CHAT, "gemini": GEMINI, "anthropic": ANTHROPIC}


def dialect_for(method: str, path: str) -> Dialect | None:
    """The dialect flexroute routes for ``method path``; None means forward unchanged."""
    if method != "POST":
        return None
    if is_gemini_path(path):
        return GEMINI
    return _BY_PATH.get(path)


def provider_for(path: str, header_names: set[str], query: str) -> str:
    """Which provider's API a request is for, from its path, then the headers its SDK sends."""
    if path.startswith("/v1beta/") or is_gemini_path(path):
        return "gemini"
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if "anthropic-version" in header_names or "x-api-key" in header_names:
        return "anthropic"
    if "x-goog-api-key" in header_names or query.startswith("key=") or "&key=" in query:
        return "gemini"
    if path.startswith("/v1/models/") and ":" in path:
        return "gemini"
    return "openai"


def error_dialect(provider: str) -> Dialect:
    """The dialect whose error shape a provider's SDK understands."""
    return _ERRORS[provider]
