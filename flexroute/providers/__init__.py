"""The provider registry: one module per provider, and the rule that says whose API a request
is for.

:func:`provider_for` decides by the request's *endpoint shape* first (Gemini's and Anthropic's
paths), then, for paths several APIs share (``/v1/models``, ``/v1/files``), by the headers
only that provider's SDKs send; OpenAI is the rest. Adding a provider is adding a module and
a line to :data:`PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from flexroute.config import Settings
from flexroute.providers.anthropic import ANTHROPIC
from flexroute.providers.base import Provider, api_root
from flexroute.providers.gemini import GEMINI
from flexroute.providers.openai import OPENAI

__all__ = [
    "ANTHROPIC",
    "GEMINI",
    "OPENAI",
    "PROVIDERS",
    "Provider",
    "api_root",
    "by_name",
    "provider_for",
    "upstream_lines",
]

# Asked in order; OpenAI, whose API is "every other /v1/ path", comes last.
PROVIDERS: tuple[Provider, ...] = (GEMINI, ANTHROPIC, OPENAI)
_BY_NAME = {provider.name: provider for provider in PROVIDERS}


def by_name(name: str) -> Provider:
    """The registered provider called ``name`` (KeyError for an unknown name)."""
    return _BY_NAME[name]


def provider_for(path: str, header_names: Collection[str], query: str) -> Provider:
    """Whose API ``path`` belongs to: by its shape, then by its SDK's headers, else OpenAI."""
    for provider in PROVIDERS:
        if provider.owns_path(path):
            return provider
    for provider in PROVIDERS:
        if provider.signature_headers.intersection(header_names):
            return provider
        name = provider.credential_query
        if name is not None and any(p.split("=", 1)[0] == name for p in query.split("&")):
            return provider
    return OPENAI


def upstream_lines(settings: Settings) -> Iterator[str]:
    """Where each provider's requests will go, one line each, as ``serve`` logs at start:
    a mistyped base URL shows before the first request 404s."""
    for provider in PROVIDERS:
        base: str = getattr(settings, provider.base_url_setting)
        example = "/v1beta/models/…" if provider is GEMINI else "/v1/…"
        env = f"FLEXROUTE_{provider.base_url_setting.upper()}"
        yield f"upstream {provider.name}: {api_root(base)}{example} ({env}={base})"
