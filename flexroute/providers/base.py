"""What one provider is to flexroute: its API's shape, its dialects, its credentials, its URL.

A :class:`Provider` is data plus a few pure rules; nothing here does I/O. The registry
(:mod:`flexroute.providers`) holds one per module, and every other part of flexroute asks a
``Provider`` rather than comparing provider names.

**Base URLs.** Operators write a provider's base URL with or without its API version
(``https://api.openai.com/v1``, ``http://localhost:8000/v1``, ``https://x.azure.com/openai/v1``,
``https://generativelanguage.googleapis.com``, ``…/v1beta``). :func:`api_root` drops one trailing
version segment; the request's own path (``/v1/chat/completions``, ``/v1beta/models/…``) is then
appended, so ``/v1`` is never doubled and never lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flexroute.dialects.base import Dialect
from flexroute.routing.decide import Reason

Headers = list[tuple[str, str]]

# One trailing API version segment: /v1, /v2, /v1beta, /v1alpha, /v1beta1.
_VERSION = re.compile(r"/v\d+(?:(?:alpha|beta)\d*)?$")


def api_root(base_url: str) -> str:
    """``base_url`` without a trailing slash and without one trailing API version segment."""
    return _VERSION.sub("", base_url.rstrip("/"))


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider's home. ``dialects`` maps exact POST paths to the dialect that routes them;
    ``match`` claims further routed paths by shape (Gemini's ``models/{m}:method``)."""

    name: str  # as written in ledger records and settings: "openai", "gemini", "anthropic"
    default_base_url: str  # the conventional form users write, documented in the README
    base_url_setting: str  # the Settings field (FLEXROUTE_<NAME>_BASE_URL)
    key_settings: tuple[str, ...]  # Settings fields holding the server's own key, first wins
    credential_headers: tuple[str, ...]  # where its SDKs send the API key
    error_dialect: Dialect  # the shape of flexroute's own errors on this provider's paths
    catalog_file: str  # pricing/<file>
    dialects: Mapping[str, Dialect]
    set_key: Callable[[Headers, str], Headers]  # add the key where its SDKs put it
    match: Callable[[str], Dialect | None] = lambda path: None
    # Paths that are this provider's API by their shape alone (checked before headers).
    owns_path: Callable[[str], bool] = lambda path: False
    # Request headers that only this provider's SDKs send (for paths shared between APIs).
    signature_headers: frozenset[str] = frozenset()
    credential_query: str | None = None  # Gemini's ``?key=``
    proxy_only: Reason | None = None  # never routed to flex (Claude): passthrough, this reason
    # OpenTelemetry GenAI semantic conventions (flexroute.tracing): ``gen_ai.provider.name``
    # ("" = ``name``) and the namespace of its service-tier attributes, if it has them
    # (``openai.request.service_tier``); without one, only ``flexroute.tier.*`` are set.
    semconv_name: str = ""
    semconv_tier_namespace: str | None = None

    def dialect_for(self, method: str, path: str) -> Dialect | None:
        """The dialect that routes ``method path``; None: forward it unchanged."""
        if method != "POST":
            return None
        return self.dialects.get(path) or self.match(path)

    def upstream_url(self, base_url: str, target: str) -> str:
        """Where a request for ``target`` (its path as sent, and query) goes, given the
        operator's ``base_url``."""
        return api_root(base_url) + target

    def with_key(self, headers: Sequence[tuple[str, str]], key: str) -> Headers:
        """``headers`` carrying ``key`` where this provider expects it, and no other key."""
        kept = [(k, v) for k, v in headers if k not in self.credential_headers]
        return self.set_key(kept, key)
