"""The limiter interface both backends implement, and the verdict they return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["WINDOW_SECONDS", "Limiter", "Verdict"]

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request counted against a key: admitted or not, and what is left."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix time (seconds) the window ends

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": str(self.reset),
        }


class Limiter(Protocol):
    async def hit(self, key: str, limit: int) -> Verdict:
        """Count one request for ``key`` in the current window; admitted if within ``limit``."""

    async def aclose(self) -> None: ...
