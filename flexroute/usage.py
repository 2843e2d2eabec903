"""What a call consumed, in one shape for every provider.

Dialects translate each wire format's usage block into :class:`Usage`; the catalog prices it.
Token counts follow one convention whatever the provider calls them:

* ``input_tokens`` is the whole prompt, *including* cached and cache-write tokens
  (OpenAI ``prompt_tokens``/``input_tokens`` and Gemini ``promptTokenCount`` already include
  them; the Anthropic dialect adds its separate counts together);
* ``cached_input_tokens`` is the part of the prompt read from the provider's cache;
* ``cache_write_tokens`` / ``cache_write_1h_tokens`` is the part written to a cache (Anthropic's
  5-minute and 1-hour writes);
* ``output_tokens`` includes reasoning/thinking tokens, which every provider bills as output.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Tier(enum.StrEnum):
    """A provider service tier in flexroute's own vocabulary (OpenAI calls standard ``default``)."""

    STANDARD = "standard"
    FLEX = "flex"
    PRIORITY = "priority"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call; see the module docstring for what each count includes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"Usage.{name} must be a non-negative integer, got {value!r}")
        parts = self.cached_input_tokens + self.cache_write_tokens + self.cache_write_1h_tokens
        if parts > self.input_tokens:
            raise ValueError(
                f"Usage: cached and cache-write tokens ({parts}) exceed input_tokens "
                f"({self.input_tokens}); input_tokens must include them"
            )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the plain input price."""
        return (
            self.input_tokens
            - self.cached_input_tokens
            - self.cache_write_tokens
            - self.cache_write_1h_tokens
        )

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
