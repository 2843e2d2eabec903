"""The payment-processor interface and the ``manual`` processor.

A processor turns one charge attempt into a :class:`ChargeResult`. The idempotency key names
the organisation, the period and the attempt, so replaying an attempt (after a crash, or from
a second process) can never charge twice at a processor that honours keys (Stripe does). Keys
expire (Stripe keeps them about 24 hours), so an invoice left ``charging`` is never charged
again under its old key: the processor is first asked for an earlier attempt that took the
money (:meth:`PaymentProcessor.earlier_charge`), and only if there is none is it charged as a
new attempt with a new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Protocol

from flexroute.ledger import Invoice, Org

CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """``succeeded`` → invoice paid; ``failed`` → past-due with ``reason`` (e.g.
    ``card_declined``, ``no_card``); ``pending`` → sent for payment outside flexroute."""

    status: Literal["succeeded", "failed", "pending"]
    reason: str | None = None
    reference: str | None = None


class PaymentProcessor(Protocol):
    name: str

    async def charge(
        self, org: Org, amount: Decimal, *, idempotency_key: str, invoice_id: str
    ) -> ChargeResult:
        """Charge ``amount`` USD to ``org``'s card on file, off-session."""

    async def earlier_charge(self, org: Org, invoice: Invoice) -> ChargeResult | None:
        """An earlier attempt at ``invoice`` that took the money (``succeeded``) or is taking
        it (``pending``), as the processor has it; None when no attempt did."""


class ManualProcessor:
    """For operators who invoice by hand: every charge is left ``pending`` until
    ``flexroute billing mark-paid`` or ``mark-failed`` says how it went."""

    name = "manual"

    async def charge(
        self, org: Org, amount: Decimal, *, idempotency_key: str, invoice_id: str
    ) -> ChargeResult:
        return ChargeResult("pending", reference=f"manual:{idempotency_key}")

    async def earlier_charge(self, org: Org, invoice: Invoice) -> ChargeResult | None:
        """None: the manual processor takes no money itself, so no attempt of it did (a new
        attempt leaves the invoice ``open`` again, for the operator)."""
        return None


def to_cents(amount: Decimal) -> int:
    """Processors charge whole cents: the exact amount rounded half-up (documented rounding;
    the invoice keeps the exact pico-USD amount)."""
    return int((amount.quantize(CENT, rounding=ROUND_HALF_UP) * 100).to_integral_value())
