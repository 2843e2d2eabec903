"""What a request may cost before it is sent: the reservation a spend cap holds (issue 15).

Pure and synchronous. The usage is estimated from the request itself:

* prompt tokens: one per ``PROMPT_BYTES_PER_TOKEN`` bytes of the request body (English text
  runs about four characters a token, and the body carries JSON labels besides the prompt,
  so this rarely falls short);
* output tokens: the request's own ceiling — ``max_tokens``, ``max_completion_tokens``,
  ``max_output_tokens`` or Gemini's ``generationConfig.maxOutputTokens`` — else
  ``DEFAULT_OUTPUT_TOKENS``.

The cost is that usage priced with the catalog at the dearer of the tier asked for and
standard (a flex request may fall back to standard); the fee is the fee rate times the
saving flex would make on it, which bounds the real fee because the catalog's flex prices are
never above standard. An unpriced model is estimated at zero: it is never billed and its
costs stay unknown, so it cannot move a cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from flexroute.catalog import ModelPrices
from flexroute.errors import CatalogError
from flexroute.fees import compute_charge
from flexroute.money import ZERO
from flexroute.usage import Tier, Usage

__all__ = ["DEFAULT_OUTPUT_TOKENS", "PROMPT_BYTES_PER_TOKEN", "Estimate", "estimate"]

PROMPT_BYTES_PER_TOKEN = 3
DEFAULT_OUTPUT_TOKENS = 4096
_OUTPUT_CEILINGS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
_CONFIGS = ("generationConfig", "generation_config")
_GEMINI_CEILINGS = ("maxOutputTokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class Estimate:
    cost: Decimal
    fee: Decimal
    usage: Usage


def estimate(
    body: Mapping[str, object],
    body_size: int,
    prices: ModelPrices | None,
    *,
    tier: Tier | None,
    billable: bool,
    fee_rate: Decimal,
) -> Estimate:
    """The reservation for one request: ``body`` as parsed, ``body_size`` its bytes."""
    usage = Usage(
        input_tokens=body_size // PROMPT_BYTES_PER_TOKEN + 1,
        output_tokens=output_ceiling(body),
    )
    if prices is None:
        return Estimate(ZERO, ZERO, usage)
    try:
        standard = prices.cost(Tier.STANDARD, usage)
        asked = prices.cost(tier, usage) if tier not in (None, Tier.STANDARD, Tier.FLEX) else ZERO
        flex = prices.cost(Tier.FLEX, usage) if billable else standard
    except CatalogError:  # e.g. no long-context price: the request will be unpriced too
        return Estimate(ZERO, ZERO, usage)
    fee = compute_charge(standard, flex, billable=billable, fee_rate=fee_rate).fee
    return Estimate(max(standard, asked), fee, usage)


def output_ceiling(body: Mapping[str, object]) -> int:
    """The most output tokens the request lets the model write."""
    for name in _OUTPUT_CEILINGS:
        found = _count(body.get(name))
        if found is not None:
            return found
    for config in _CONFIGS:
        inner = body.get(config)
        if isinstance(inner, Mapping):
            for name in _GEMINI_CEILINGS:
                found = _count(inner.get(name))
                if found is not None:
                    return found
    return DEFAULT_OUTPUT_TOKENS


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10_000_000:
        return value
    return None
