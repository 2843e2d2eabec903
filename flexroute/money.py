"""Money is :class:`~decimal.Decimal` USD everywhere; never a float.

Costs are exact: a catalog price has at most six decimal places per million tokens, so every
cost is a whole number of pico-USD (1e-12). The fee is the one rounded figure: rounded *down*
to a nano-USD (1e-9) in :func:`flexroute.fees.compute_fee`. Storage keeps amounts as integers
of pico-USD (SQLite ``INTEGER``) so sums in SQL stay exact.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

ZERO = Decimal(0)
NANO = Decimal("1e-9")
PICO = Decimal("1e-12")
PER_MILLION = Decimal(1_000_000)


def floor_nano(amount: Decimal) -> Decimal:
    """Round ``amount`` down to a whole nano-USD."""
    return amount.quantize(NANO, rounding=ROUND_FLOOR)


def to_pico(amount: Decimal) -> int:
    """The exact integer number of pico-USD in ``amount``; raises if it is not exact."""
    scaled = amount.scaleb(12)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} USD is not a whole number of pico-USD")
    return int(scaled)


def from_pico(pico: int) -> Decimal:
    return Decimal(pico).scaleb(-12)


def format_usd(amount: Decimal) -> str:
    """Fixed-point decimal string with at least nine decimals (``"23.400000000"``), exact."""
    text = format(amount, "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac.ljust(9, '0')}"
