"""Saving and fee of a call (SPEC §3)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexroute.fees import DEFAULT_FEE_RATE, Charge, compute_charge, compute_fee
from flexroute.money import NANO, ZERO, from_pico

# Costs are whole pico-USD (the catalog guarantees it): up to $1,000,000 per call.
costs = st.integers(min_value=0, max_value=10**18).map(from_pico)
fee_rates = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)


class TestComputeChargeProperties:
    @given(standard=costs, actual=costs, rate=fee_rates)
    def test_fee_is_never_negative(self, standard: Decimal, actual: Decimal, rate: Decimal) -> None:
        """Whatever the costs, the fee is zero or more."""
        assert compute_charge(standard, actual, billable=True, fee_rate=rate).fee >= 0

    @given(standard=costs, actual=costs, rate=fee_rates)
    def test_fee_never_exceeds_the_rate_times_the_saving(
        self, standard: Decimal, actual: Decimal, rate: Decimal
    ) -> None:
        """Rounding is down, so the fee is at most ``fee_rate × saving``."""
        charge = compute_charge(standard, actual, billable=True, fee_rate=rate)
        assert charge.fee <= charge.saving * rate

    @given(standard=costs, actual=costs, rate=fee_rates)
    def test_fee_is_a_whole_nano_usd_within_one_nano_of_the_true_value(
        self, standard: Decimal, actual: Decimal, rate: Decimal
    ) -> None:
        """The fee has no digits below 1e-9 and is less than 1e-9 below the exact product."""
        charge = compute_charge(standard, actual, billable=True, fee_rate=rate)
        assert charge.fee == charge.fee.quantize(NANO)
        assert ZERO <= charge.saving * rate - charge.fee < NANO

    @given(standard=costs, actual=costs, rate=fee_rates)
    def test_not_billable_means_no_saving_and_no_fee(
        self, standard: Decimal, actual: Decimal, rate: Decimal
    ) -> None:
        """A fallback or passthrough route saves nothing and pays nothing; costs are kept."""
        charge = compute_charge(standard, actual, billable=False, fee_rate=rate)
        assert charge == Charge(standard, actual, ZERO, ZERO)

    @given(standard=costs, extra=costs, rate=fee_rates)
    def test_saving_is_zero_when_the_actual_cost_is_not_below_standard(
        self, standard: Decimal, extra: Decimal, rate: Decimal
    ) -> None:
        """Serving at or above the standard price saves nothing, so there is no fee."""
        charge = compute_charge(standard, standard + extra, billable=True, fee_rate=rate)
        assert charge.saving == 0
        assert charge.fee == 0

    @given(standard=costs, actual=costs)
    def test_saving_is_the_exact_difference_when_flex_was_cheaper(
        self, standard: Decimal, actual: Decimal
    ) -> None:
        """The saving is exactly standard minus actual, never rounded."""
        charge = compute_charge(standard, actual, billable=True)
        assert charge.saving == max(ZERO, standard - actual)


class TestComputeChargeExamples:
    def test_a_flex_call_at_half_price_pays_a_fifth_of_the_saving(self) -> None:
        """$0.0105 standard vs $0.00525 flex saves $0.00525 and pays $0.00105 at 20%."""
        charge = compute_charge(Decimal("0.0105"), Decimal("0.00525"), billable=True)
        standard, flex = Decimal("0.0105"), Decimal("0.00525")
        assert charge == Charge(standard, flex, Decimal("0.00525"), Decimal("0.001050000"))

    def test_the_fee_is_rounded_down_to_a_nano_usd(self) -> None:
        """A saving of $0.000000004999 at 20% is $0.0000000009998, floored to $0.000000000."""
        charge = compute_charge(Decimal("0.000000009999"), Decimal("0.000000005000"), billable=True)
        assert charge.saving == Decimal("0.000000004999")
        assert charge.fee == Decimal("0E-9")

    def test_a_fee_just_over_a_nano_keeps_one_nano(self) -> None:
        """A saving of $0.000000005123 at 20% is $0.0000000010246, floored to $0.000000001."""
        charge = compute_charge(Decimal("0.000000010123"), Decimal("0.000000005"), billable=True)
        assert charge.fee == Decimal("0.000000001")

    def test_the_default_rate_is_twenty_percent(self) -> None:
        """SPEC §3: the fee rate is 0.20 unless the operator sets another."""
        assert Decimal("0.20") == DEFAULT_FEE_RATE
        assert compute_fee(Decimal(5)) == Decimal("1.000000000")

    def test_a_custom_rate_applies(self) -> None:
        """``fee_rate`` replaces the default rate."""
        charge = compute_charge(Decimal(3), Decimal(1), billable=True, fee_rate=Decimal("0.1"))
        assert charge.fee == Decimal("0.200000000")

    def test_a_fallback_call_reports_costs_without_saving_or_fee(self) -> None:
        """A call that fell back to standard is not billable even when the costs differ."""
        charge = compute_charge(Decimal("0.02"), Decimal("0.01"), billable=False)
        assert (charge.standard_cost, charge.actual_cost) == (Decimal("0.02"), Decimal("0.01"))
        assert (charge.saving, charge.fee) == (ZERO, ZERO)

    @pytest.mark.parametrize("bad", [0.5, 1, "0.5"])
    def test_money_must_be_decimal(self, bad: object) -> None:
        """A float, int or string cost is a TypeError: money is never a float."""
        with pytest.raises(TypeError, match="Decimal"):
            compute_charge(bad, Decimal(0), billable=True)  # type: ignore[arg-type]

    @pytest.mark.parametrize("rate", [Decimal("-0.1"), Decimal("1.5"), Decimal("NaN")])
    def test_fee_rate_must_be_between_zero_and_one(self, rate: Decimal) -> None:
        """A fee rate outside [0, 1] is a ValueError."""
        with pytest.raises(ValueError, match="fee_rate"):
            compute_charge(Decimal(1), Decimal(0), billable=True, fee_rate=rate)

    def test_negative_costs_are_rejected(self) -> None:
        """A negative cost is a ValueError naming the argument."""
        with pytest.raises(ValueError, match="actual_cost"):
            compute_charge(Decimal(1), Decimal(-1), billable=True)
