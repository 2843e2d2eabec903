"""Sidecar credentials (SPEC §5): the server's provider key if it has one, else the client's.

Gateway mode (organisations and flexroute keys in the database) is
:mod:`flexroute.proxy.gateway`; it never uses the server's keys.
"""

from __future__ import annotations

from pydantic import SecretStr

from flexroute.config import Settings
from flexroute.providers import PROVIDERS, Provider


class SidecarAuth:
    def __init__(self, settings: Settings) -> None:
        self._keys: dict[str, SecretStr] = {}
        for provider in PROVIDERS:
            found = (getattr(settings, name) for name in provider.key_settings)
            secret = next((key for key in found if key is not None), None)
            if secret is not None:
                self._keys[provider.name] = secret

    def upstream_headers(
        self, provider: Provider, headers: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """``headers`` with the provider credential the server holds, if any."""
        secret = self._keys.get(provider.name)
        if secret is None:
            return headers
        return provider.with_key(headers, secret.get_secret_value())
