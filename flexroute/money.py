"""Money is :class:`~decimal.Decimal` USD everywhere; never a float.

Costs are exact: a catalog price has at most six decimal places per million tokens, so every
cost is a whole number of pico-USD (1e-12). The fee is the one rounded figure: rounded *down*
to a nano-USD (1e-9) in :func:`flexroute.fees.compute_fee`. Storage keeps amounts as integers
of pico-USD (SQLite ``INTEGER``) so sums in SQL stay exact.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from flexroute.errors import ConfigError

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


def parse_usd(value: str | None, option: str) -> Decimal | None:
    """An amount of USD typed by a person (a cap): ``50``, ``12.50``, ``$5``; ``None``, empty,
    ``none`` or ``off`` is no amount. ConfigError names ``option`` and the value otherwise."""
    if value is None or value.strip().lower() in ("", "none", "off"):
        return None
    try:
        amount = Decimal(value.strip().removeprefix("$"))
        to_pico(amount)
    except (InvalidOperation, ValueError):
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise ConfigError(
            f"{option} {value!r} is not an amount of USD: use e.g. 50 or 12.50 (or none to remove)"
        )
    return amount
