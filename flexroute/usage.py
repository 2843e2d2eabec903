"""What a call consumed, in one shape for every provider.

Dialects translate each wire format's usage block into :class:`Usage`; the catalog prices it.
Token counts follow one convention whatever the provider calls them:

* ``input_tokens`` is the whole prompt, *including* cached and cache-write tokens
  (OpenAI ``prompt_tokens``/``input_tokens`` and Gemini ``promptTokenCount`` already include
  them; the Anthropic dialect adds its separate counts together);
* ``cached_input_tokens`` is the part of the prompt read from the provider's cache;
* ``cache_write_tokens`` is the part written to a cache with the short lifetime (Anthropic's
  5-minute writes, OpenAI's 30-minute writes); ``cache_write_1h_tokens`` Anthropic's 1-hour
  writes and ``cache_write_12h_tokens`` OpenAI's 12-hour writes;
* ``output_tokens`` includes reasoning/thinking tokens, which every provider bills as output;
* ``input_by_modality`` / ``cached_by_modality`` / ``output_by_modality`` break the prompt, its
  cached part and the output down by modality (lower-case names as the provider reports them:
  ``text``, ``image``, ``audio``, ``video``, ``document``…) when the provider reports that
  (Gemini's ``promptTokensDetails``, ``cacheTokensDetails``, ``candidatesTokensDetails``); empty
  means "not broken down". The catalog prices each modality or refuses (see ``catalog``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_MODALITY_FIELDS = ("input_by_modality", "cached_by_modality", "output_by_modality")


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
    cache_write_12h_tokens: int = 0
    input_by_modality: Mapping[str, int] = field(default_factory=dict)
    cached_by_modality: Mapping[str, int] = field(default_factory=dict)
    output_by_modality: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if name in _MODALITY_FIELDS:
                object.__setattr__(self, name, _modalities(name, getattr(self, name)))
                continue
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Usage.{name} must be a non-negative integer, got {value!r}")
        parts = (
            self.cached_input_tokens
            + self.cache_write_tokens
            + self.cache_write_1h_tokens
            + self.cache_write_12h_tokens
        )
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
            - self.cache_write_12h_tokens
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able counts; a modality breakdown only where the provider gave one."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in _MODALITY_FIELDS:
                if value:
                    out[name] = dict(value)
            else:
                out[name] = value
        return out


def _modalities(name: str, value: object) -> Mapping[str, int]:
    if not isinstance(value, Mapping):
        raise TypeError(f"Usage.{name} must map modality names to token counts, got {value!r}")
    counts: dict[str, int] = {}
    for modality, tokens in value.items():
        if not isinstance(modality, str) or not modality:
            raise ValueError(f"Usage.{name}: {modality!r} is not a modality name")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise ValueError(f"Usage.{name}[{modality!r}] must be a non-negative integer")
        if tokens:
            key = modality.lower()
            counts[key] = counts.get(key, 0) + tokens
    return counts  # a private copy (plain dict: ``dataclasses.asdict`` must copy it)
