"""Billing: monthly charges of unpaid fees, past-due state and the 402 gate (SPEC §4).

* :mod:`~flexroute.billing.processors` — the payment-processor interface and ``manual``;
  :mod:`~flexroute.billing.stripe_processor` — Stripe through its SDK;
* :mod:`~flexroute.billing.run` — the billing run and one invoice's charge attempt;
* :mod:`~flexroute.billing.state` — what operators and card changes do to an organisation;
* :mod:`~flexroute.billing.gate` — refuses billable flex requests of past-due organisations.
"""

from __future__ import annotations

from flexroute.billing.gate import BillingGate
from flexroute.billing.processors import ChargeResult, ManualProcessor, PaymentProcessor
from flexroute.billing.run import RunOutcome, billing_run

__all__ = [
    "BillingGate",
    "ChargeResult",
    "ManualProcessor",
    "PaymentProcessor",
    "RunOutcome",
    "billing_run",
]
