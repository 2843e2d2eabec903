"""Anthropic: Claude is proxy-only (no flex tier); ``/v1/messages`` is read for usage and cost,
and every other path of the API is forwarded unchanged."""

from __future__ import annotations

from types import MappingProxyType

from flexroute.dialects.anthropic import AnthropicDialect
from flexroute.providers.base import Headers, Provider
from flexroute.routing.decide import Reason

MESSAGES = AnthropicDialect()


def _set_key(headers: Headers, key: str) -> Headers:
    return [*headers, ("x-api-key", key)]


def _owns(path: str) -> bool:
    return path in ("/v1/messages", "/v1/complete") or path.startswith("/v1/messages/")


ANTHROPIC = Provider(
    name="anthropic",
    default_base_url="https://api.anthropic.com",
    base_url_setting="anthropic_base_url",
    key_settings=("anthropic_api_key",),
    credential_headers=("x-api-key", "authorization"),
    error_dialect=MESSAGES,
    catalog_file="anthropic.toml",
    dialects=MappingProxyType({"/v1/messages": MESSAGES}),
    owns_path=_owns,
    # anthropic's SDKs always send anthropic-version; x-api-key is where they put the key.
    signature_headers=frozenset({"anthropic-version", "x-api-key"}),
    proxy_only=Reason.ANTHROPIC,
    set_key=_set_key,
)
