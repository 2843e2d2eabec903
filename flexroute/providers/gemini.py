"""Gemini Developer API: ``models/{model}:generateContent`` and ``:streamGenerateContent``, and
the Interactions API (``POST /v1beta/interactions``, ``/v1/interactions``) are routed; every
other path of the API is forwarded unchanged.

A path is Gemini's by its shape: anything under ``/v1beta/``, ``/v1alpha/`` or ``/upload/``, or
``/v1/models/{model}:{method}`` where ``method`` is one of the API's model methods. A colon in
a model name alone proves nothing (OpenAI's fine-tuned models are ``ft:base:org::id``).
"""

from __future__ import annotations

import re
from types import MappingProxyType

from flexroute.dialects.base import Dialect
from flexroute.dialects.gemini import GeminiDialect, is_gemini_path
from flexroute.dialects.gemini_interactions import PATHS as INTERACTIONS_PATHS
from flexroute.dialects.gemini_interactions import InteractionsDialect
from flexroute.providers.base import Headers, Provider

GENERATE = GeminiDialect()
INTERACTIONS = InteractionsDialect()

_METHODS = (
    "generateContent|streamGenerateContent|countTokens|embedContent|batchEmbedContents|"
    "batchGenerateContent|asyncBatchEmbedContent|predict|predictLongRunning|generateAnswer|"
    "generateText|countTextTokens|embedText|batchEmbedText|generateMessage|countMessageTokens"
)
_MODEL_METHOD = re.compile(rf"^/v1(?:beta|alpha)?\d*/(?:tuned)?[mM]odels/[^/:]+:(?:{_METHODS})$")


def _match(path: str) -> Dialect | None:
    return GENERATE if is_gemini_path(path) else None


def _owns(path: str) -> bool:
    prefixes = ("/v1beta", "/v1alpha", "/upload/", "/v1/interactions")
    return path.startswith(prefixes) or bool(_MODEL_METHOD.match(path))


def _set_key(headers: Headers, key: str) -> Headers:
    return [*headers, ("x-goog-api-key", key)]


GEMINI = Provider(
    name="gemini",
    default_base_url="https://generativelanguage.googleapis.com",
    base_url_setting="gemini_base_url",
    key_settings=("gemini_api_key", "google_api_key"),
    credential_headers=("x-goog-api-key",),
    error_dialect=GENERATE,
    catalog_file="gemini.toml",
    dialects=MappingProxyType(dict.fromkeys(INTERACTIONS_PATHS, INTERACTIONS)),
    match=_match,
    owns_path=_owns,
    signature_headers=frozenset({"x-goog-api-key", "x-goog-api-client"}),
    credential_query="key",
    set_key=_set_key,
    semconv_name="gcp.gemini",
)
