"""Pricing an outcome (SPEC §3): the tier served decides the cost; only flex-served flex pays."""

from __future__ import annotations

from decimal import Decimal

from flexroute.catalog import ModelPrices, default_catalog
from flexroute.settle import price
from flexroute.usage import Tier, Usage

RATE = Decimal("0.20")
USAGE = Usage(input_tokens=10_000, output_tokens=2_000, cached_input_tokens=4_000)


def prices(model: str = "gpt-5-mini") -> ModelPrices:
    found = default_catalog().lookup("openai", model)
    assert found is not None
    return found


class TestPrice:
    def test_flex_served_at_flex_pays_a_fifth_of_the_saving(self) -> None:
        """The fee is 20% of standard minus flex, rounded down to 1e-9."""
        p = prices()
        priced = price(p, USAGE, Tier.FLEX, flex_route=True, fee_rate=RATE)
        assert priced.standard_cost == p.cost(Tier.STANDARD, USAGE)
        assert priced.actual_cost == p.cost(Tier.FLEX, USAGE)
        assert priced.saving == priced.standard_cost - priced.actual_cost > 0
        assert priced.fee == (priced.saving * RATE).quantize(
            Decimal("1e-9"), rounding="ROUND_FLOOR"
        )

    def test_flex_request_served_at_standard_pays_nothing(self) -> None:
        """The tier the provider reports wins over the tier requested."""
        priced = price(prices(), USAGE, Tier.STANDARD, flex_route=True, fee_rate=RATE)
        assert priced.saving == priced.fee == 0
        assert priced.actual_cost == priced.standard_cost

    def test_passthrough_at_flex_is_not_billable(self) -> None:
        """Only the flex route is billable, even if a passthrough call was served at flex."""
        priced = price(prices(), USAGE, Tier.FLEX, flex_route=False, fee_rate=RATE)
        assert priced.fee == priced.saving == 0
        assert priced.actual_cost is not None
        assert priced.standard_cost is not None
        assert priced.actual_cost < priced.standard_cost

    def test_unknown_usage_model_or_tier_price_leaves_costs_unknown(self) -> None:
        """No usage or no price: costs None, saving and fee zero, never a guess."""
        assert price(None, USAGE, Tier.FLEX, flex_route=True, fee_rate=RATE).actual_cost is None
        assert price(prices(), None, Tier.FLEX, flex_route=True, fee_rate=RATE).fee == 0
        no_priority = next(m for m in default_catalog().models() if Tier.PRIORITY not in m.tiers)
        priced = price(no_priority, USAGE, Tier.PRIORITY, flex_route=False, fee_rate=RATE)
        assert priced.standard_cost is not None
        assert priced.actual_cost is None
        assert priced.fee == 0
