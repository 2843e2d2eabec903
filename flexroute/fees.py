"""Standard cost vs actual cost -> saving -> fee (SPEC §3).

``saving = max(0, standard_cost - actual_cost)`` and ``fee = saving × fee_rate``, rounded *down*
to a whole nano-USD (1e-9). This is the one place a money figure is rounded: costs are exact
pico-USD (see :mod:`flexroute.money`), the fee is floored so flexroute never charges a fraction
of a nano-dollar more than the rate gives. A route that is not billable (fallback, passthrough)
saves nothing and pays no fee; its costs are still reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from flexroute.money import ZERO, floor_nano

__all__ = ["DEFAULT_FEE_RATE", "Charge", "compute_charge", "compute_fee"]

DEFAULT_FEE_RATE = Decimal("0.20")

# Wide enough that products of costs (≤ 12 places) and rates are always exact.
_PRECISION = 60


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call cost at the standard tier and as served, what it saved and its fee (USD)."""

    standard_cost: Decimal
    actual_cost: Decimal
    saving: Decimal
    fee: Decimal


def compute_fee(saving: Decimal, fee_rate: Decimal = DEFAULT_FEE_RATE) -> Decimal:
    """``saving × fee_rate`` rounded down to a whole nano-USD."""
    _require_money("saving", saving)
    _require_rate(fee_rate)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return floor_nano(saving * fee_rate)


def compute_charge(
    standard_cost: Decimal,
    actual_cost: Decimal,
    *,
    billable: bool,
    fee_rate: Decimal = DEFAULT_FEE_RATE,
) -> Charge:
    """The saving and fee of one call; both are zero when the route is not ``billable``."""
    _require_money("standard_cost", standard_cost)
    _require_money("actual_cost", actual_cost)
    _require_rate(fee_rate)
    if not billable:
        return Charge(standard_cost, actual_cost, ZERO, ZERO)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        saving = max(ZERO, standard_cost - actual_cost)
    return Charge(standard_cost, actual_cost, saving, compute_fee(saving, fee_rate))


def _require_money(name: str, amount: object) -> None:
    if not isinstance(amount, Decimal):
        raise TypeError(
            f"{name} must be a Decimal amount of USD, got {amount!r}; money is never a float"
        )
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite amount of USD ≥ 0, got {amount}")


def _require_rate(fee_rate: object) -> None:
    if not isinstance(fee_rate, Decimal):
        raise TypeError(f"fee_rate must be a Decimal such as Decimal('0.20'), got {fee_rate!r}")
    if not fee_rate.is_finite() or not ZERO <= fee_rate <= 1:
        raise ValueError(f"fee_rate must be between 0 and 1, got {fee_rate}")
