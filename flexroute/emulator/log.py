"""The attempt log: one record per request the emulator received, for tests and benchmarks.

Credentials never reach the log: the values of ``authorization``, ``api-key``, ``x-api-key``
and ``x-goog-api-key`` are replaced by ``fingerprint(value)`` (a ``Bearer`` scheme is kept in
front), so a test can still check which key arrived.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})


def fingerprint(secret: str) -> str:
    """``sha256:`` and the first 16 hex digits of the secret's SHA-256."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def redact(name: str, value: str) -> str:
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, sep, token = value.partition(" ")
    if sep and scheme.lower() == "bearer":
        return f"{scheme} {fingerprint(token)}"
    return fingerprint(value)


@dataclass(slots=True)
class AttemptRecord:
    """One request as the emulator saw and answered it (times are ``time.time()``)."""

    seq: int
    path: str
    arrived_at: float
    headers: dict[str, str]
    raw_body: str = ""
    model: str | None = None
    tier_requested: str | None = None
    tier_served: str | None = None
    stream: bool = False
    client_request_id: str | None = None
    first_output_at: float | None = None
    ended_at: float | None = None
    closed_early: bool = False
    status: int | None = None
    controls: str | None = None  # the raw ``x-emulator`` header
    weather: str | None = None  # the flex weather's state the attempt met (weather on)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class AttemptLog:
    """Thread-safe: the app appends from its event loop, tests read from theirs."""

    def __init__(self, limit: int | None = None) -> None:
        self._lock = threading.Lock()
        self._records: deque[AttemptRecord] = deque(maxlen=limit)  # oldest dropped past limit
        self._seq = 0

    def open(
        self, path: str, headers: Iterable[tuple[str, str]], arrived_at: float
    ) -> AttemptRecord:
        with self._lock:
            self._seq += 1
            record = AttemptRecord(
                seq=self._seq,
                path=path,
                arrived_at=arrived_at,
                headers={name: redact(name, value) for name, value in headers},
            )
            self._records.append(record)
        return record

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [record.to_json() for record in self._records]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._seq = 0
