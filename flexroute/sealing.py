"""Provider keys sealed at rest with ``FLEXROUTE_SECRET_KEY`` (AES-256-GCM).

An envelope is ``fr1.<secret id>.<base64url(nonce ‖ ciphertext ‖ tag)>``. The AES key is
derived from the operator's secret with HKDF-SHA256; the secret id is 8 hex digits of a hash of
the derived key, so it names which secret sealed an envelope without revealing it. The
associated data is the organisation and the provider: an envelope copied to another
organisation (or provider) fails to open.

Rotation without downtime: set the new secret as ``FLEXROUTE_SECRET_KEY`` and the old one(s) in
``FLEXROUTE_SECRET_KEY_PREVIOUS`` (comma-separated); replicas open envelopes sealed with either,
and ``flexroute providers rotate`` re-seals every stored key with the new secret. Then drop the
previous secret.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flexroute.config import Settings
from flexroute.errors import ConfigError

_VERSION = "fr1"
_INFO = b"flexroute provider keys v1"


class SealError(ConfigError):
    """An envelope could not be opened: unknown secret, tampered, or another org's."""


def _derive(secret: str) -> bytes:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return kdf.derive(secret.encode())


class Sealer:
    """Seals with the current secret; opens with the current or any previous one."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        if not current:
            raise ConfigError("FLEXROUTE_SECRET_KEY is empty")
        self._keys: dict[str, bytes] = {}
        self._current = self._add(current)
        for secret in previous:
            self._add(secret)

    def _add(self, secret: str) -> str:
        key = _derive(secret)
        secret_id = hashlib.sha256(b"flexroute-secret-id" + key).hexdigest()[:8]
        self._keys[secret_id] = key
        return secret_id

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        if settings.secret_key is None:
            raise ConfigError(
                "FLEXROUTE_SECRET_KEY is not set: it encrypts stored provider keys. Set it to a "
                "long random string, e.g. the output of `openssl rand -hex 32`."
            )
        previous = settings.secret_key_previous
        olds = [] if previous is None else previous.get_secret_value().split(",")
        return cls(settings.secret_key.get_secret_value(), [s for s in olds if s])

    def seal(self, plaintext: str, org_id: str, provider: str) -> str:
        nonce = os.urandom(12)
        box = AESGCM(self._keys[self._current])
        data = nonce + box.encrypt(nonce, plaintext.encode(), _aad(org_id, provider))
        return f"{_VERSION}.{self._current}.{base64.urlsafe_b64encode(data).decode()}"

    def open(self, envelope: str, org_id: str, provider: str) -> str:
        try:
            version, secret_id, payload = envelope.split(".", 2)
            data = base64.urlsafe_b64decode(payload)
        except ValueError:
            raise SealError("a stored provider key is not a flexroute envelope") from None
        key = self._keys.get(secret_id) if version == _VERSION else None
        if key is None:
            raise SealError(
                f"a stored {provider} key of {org_id} was sealed with a secret this server does "
                "not have: set FLEXROUTE_SECRET_KEY_PREVIOUS to the old secret"
            )
        try:
            plain = AESGCM(key).decrypt(data[:12], data[12:], _aad(org_id, provider))
        except InvalidTag:
            raise SealError(
                f"the stored {provider} key of {org_id} does not open: tampered or moved"
            ) from None
        return plain.decode()

    def is_current(self, envelope: str) -> bool:
        return envelope.startswith(f"{_VERSION}.{self._current}.")


def _aad(org_id: str, provider: str) -> bytes:
    return f"flexroute\x00{org_id}\x00{provider}".encode()
