"""Sidecar credentials (SPEC §5): the server's provider key if it has one, else the client's.

Gateway mode (organisations and flexroute keys in the database) is
:mod:`flexroute.proxy.gateway`; it never uses the server's keys.
"""

from __future__ import annotations

from flexroute.config import Settings

# Where each provider's SDK puts its key.
_KEY_HEADERS = {
    "openai": ("authorization",),
    "gemini": ("x-goog-api-key",),
    "anthropic": ("x-api-key", "authorization"),
}


class SidecarAuth:
    def __init__(self, settings: Settings) -> None:
        gemini = settings.gemini_api_key or settings.google_api_key
        self._keys = {
            "openai": settings.openai_api_key,
            "gemini": gemini,
            "anthropic": settings.anthropic_api_key,
        }

    def upstream_headers(
        self, provider: str, headers: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """``headers`` with the provider credential the server holds, if any."""
        secret = self._keys.get(provider)
        if secret is None:
            return headers
        return with_provider_key(provider, headers, secret.get_secret_value())


def with_provider_key(
    provider: str, headers: list[tuple[str, str]], key: str
) -> list[tuple[str, str]]:
    """``headers`` carrying ``key`` where the provider expects it (and no other credential)."""
    names = _KEY_HEADERS[provider]
    kept = [(k, v) for k, v in headers if k not in names]
    if provider == "openai":
        kept.append(("authorization", f"Bearer {key}"))
    elif provider == "gemini":
        kept.append(("x-goog-api-key", key))
    else:
        kept.append(("x-api-key", key))
    return kept
