"""What one model costs: its prices per tier, and the exact cost of a call's usage.

The frozen dataclasses :mod:`flexroute.catalog` builds from ``pricing/*.toml`` (it re-exports
them); the pricing rules are described there and in ``pricing/README.md``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, Inexact, localcontext

from flexroute.errors import CatalogError
from flexroute.money import PICO
from flexroute.usage import Tier, Usage

__all__ = [
    "TEXT_ONLY",
    "UNPRICED_CACHE_WRITE",
    "UNPRICED_MODALITY",
    "ModelPrices",
    "Override",
    "TierPrices",
    "UnpricedUsageError",
]

UNPRICED_MODALITY = "model-unpriced-modality"
UNPRICED_CACHE_WRITE = "model-unpriced-cache-write"
TEXT_ONLY: frozenset[str] = frozenset({"text"})


class UnpricedUsageError(CatalogError):
    """The usage holds something the catalog has no price for (a modality, a write duration).

    ``reason`` is the ledger's word for it (``model-unpriced-modality``,
    ``model-unpriced-cache-write``); such a call has unknown costs and no fee, never a guess."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TierPrices:
    """Prices of one model at one tier, USD per 1M tokens; ``None`` cache writes bill as input."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_write_12h: Decimal | None = None
    input_audio: Decimal | None = None
    cached_input_audio: Decimal | None = None

    def cost(
        self,
        usage: Usage,
        *,
        input_modalities: frozenset[str] = TEXT_ONLY,
        output_modalities: frozenset[str] = TEXT_ONLY,
    ) -> Decimal:
        """The exact USD cost of ``usage`` at these prices, quantized to a pico-USD.

        Raises :class:`UnpricedUsageError` for a modality or cache-write duration with no price."""
        write, write_1h, write_12h = self._writes(usage)
        audio, cached_audio = self._audio(usage, input_modalities)
        for modality in usage.output_by_modality:
            if modality not in output_modalities:
                raise UnpricedUsageError(UNPRICED_MODALITY, f"no price for {modality} output")
        audio_price = self.input if self.input_audio is None else self.input_audio
        cached_audio_price = (
            audio_price if self.cached_input_audio is None else self.cached_input_audio
        )
        with localcontext() as ctx:
            ctx.prec = 60
            ctx.traps[Inexact] = True
            per_million = (
                (usage.uncached_input_tokens - audio) * self.input
                + audio * audio_price
                + (usage.cached_input_tokens - cached_audio) * self.cached_input
                + cached_audio * cached_audio_price
                + usage.cache_write_tokens * write
                + usage.cache_write_1h_tokens * write_1h
                + usage.cache_write_12h_tokens * write_12h
                + usage.output_tokens * self.output
            )
            return per_million.scaleb(-6).quantize(PICO)

    def _writes(self, usage: Usage) -> tuple[Decimal, Decimal, Decimal]:
        """Prices of short, 1-hour and 12-hour writes; a model without write prices bills
        every write as input, a model with them has no price for a duration it does not list."""
        if self.cache_write is None:
            return self.input, self.input, self.input
        for tokens, price, name in (
            (usage.cache_write_1h_tokens, self.cache_write_1h, "1-hour"),
            (usage.cache_write_12h_tokens, self.cache_write_12h, "12-hour"),
        ):
            if tokens and price is None:
                raise UnpricedUsageError(UNPRICED_CACHE_WRITE, f"no price for {name} cache writes")
        zero = Decimal(0)
        return (
            self.cache_write,
            zero if self.cache_write_1h is None else self.cache_write_1h,
            zero if self.cache_write_12h is None else self.cache_write_12h,
        )

    def _audio(self, usage: Usage, input_modalities: frozenset[str]) -> tuple[int, int]:
        """Uncached and cached prompt tokens billed at the audio rates (0, 0 when audio is
        priced like the other listed modalities or absent)."""
        seen = set(usage.input_by_modality) | set(usage.cached_by_modality)
        for modality in sorted(seen):
            if modality in input_modalities:
                continue
            if modality == "audio" and self.input_audio is not None:
                continue
            raise UnpricedUsageError(UNPRICED_MODALITY, f"no price for {modality} input")
        if "audio" in input_modalities or self.input_audio is None:
            return 0, 0
        cached = min(usage.cached_by_modality.get("audio", 0), usage.cached_input_tokens)
        total = usage.input_by_modality.get("audio", 0)
        uncached = min(max(0, total - cached), usage.uncached_input_tokens)
        return uncached, cached


@dataclass(frozen=True, slots=True)
class Override:
    """A figure where the catalog knowingly disagrees with genai-prices, and why.

    ``flexroute prices check`` honours it only while genai-prices still says ``theirs``."""

    tier: str  # "standard", "flex", "priority", or "long_context.<tier>"
    field: str  # a TierPrices field name, e.g. "input"
    theirs: Decimal | None  # None: genai-prices has no figure there
    reason: str


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """Everything the catalog knows about the price of one model."""

    provider: str  # "openai" | "gemini" | "anthropic"
    model: str
    tiers: Mapping[Tier, TierPrices]
    long_context_threshold: int | None  # input tokens; above it the whole request is repriced
    long_context_tiers: Mapping[Tier, TierPrices]
    source: str
    checked: datetime.date
    aliases: tuple[str, ...] = ()
    notes: str = ""
    input_modalities: frozenset[str] = TEXT_ONLY
    output_modalities: frozenset[str] = TEXT_ONLY
    overrides: tuple[Override, ...] = ()
    _lookup_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if Tier.STANDARD not in self.tiers:
            raise CatalogError(f'{self.provider} model "{self.model}" has no standard price')
        if self.long_context_tiers and self.long_context_threshold is None:
            raise CatalogError(
                f'{self.provider} model "{self.model}" has long-context prices but no threshold'
            )
        names = (self.model, *self.aliases)
        object.__setattr__(self, "_lookup_names", tuple(name.lower() for name in names))

    @property
    def flex_capable(self) -> bool:
        """Whether the catalog prices this model's flex tier (only then is flex routed)."""
        return Tier.FLEX in self.tiers

    def cost(self, tier: Tier, usage: Usage) -> Decimal:
        """The exact USD cost of ``usage`` served at ``tier``; CatalogError if it has no price
        (:class:`UnpricedUsageError` when the tier is priced but part of the usage is not)."""
        threshold = self.long_context_threshold
        if threshold is not None and usage.input_tokens > threshold:
            prices = self.long_context_tiers.get(tier)
            if prices is None:
                raise CatalogError(
                    f'{self.provider} model "{self.model}" has no {tier} price for prompts '
                    f"over {threshold} input tokens"
                )
        else:
            prices = self.tiers.get(tier)
            if prices is None:
                raise CatalogError(f'{self.provider} model "{self.model}" has no {tier} price')
        try:
            return prices.cost(
                usage,
                input_modalities=self.input_modalities,
                output_modalities=self.output_modalities,
            )
        except UnpricedUsageError as error:
            raise UnpricedUsageError(
                error.reason, f'{self.provider} model "{self.model}" {tier}: {error}'
            ) from None
