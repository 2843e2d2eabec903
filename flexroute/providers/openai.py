"""OpenAI: chat completions and the Responses API are routed; every other ``/v1/`` path of
the API (embeddings, files, batches, models, fine-tuned model paths such as
``/v1/models/ft:gpt-4o-mini:org::id``) is forwarded unchanged."""

from __future__ import annotations

from types import MappingProxyType

from flexroute.dialects.openai_chat import ChatDialect
from flexroute.dialects.openai_responses import ResponsesDialect
from flexroute.providers.base import Headers, Provider

CHAT = ChatDialect()
RESPONSES = ResponsesDialect()


def _set_key(headers: Headers, key: str) -> Headers:
    return [*headers, ("authorization", f"Bearer {key}")]


OPENAI = Provider(
    name="openai",
    default_base_url="https://api.openai.com/v1",
    base_url_setting="openai_base_url",
    key_settings=("openai_api_key",),
    credential_headers=("authorization",),
    error_dialect=CHAT,
    catalog_file="openai.toml",
    dialects=MappingProxyType({"/v1/chat/completions": CHAT, "/v1/responses": RESPONSES}),
    set_key=_set_key,
    semconv_tier_namespace="openai",
)
