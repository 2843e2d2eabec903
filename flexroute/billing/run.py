"""The billing run: charge each organisation once per calendar month (UTC).

For the month containing ``at``, every organisation whose uncharged fees received before the
month's end reach the threshold gets one invoice (the store's ``claim_invoice`` is one
transaction guarded by ``UNIQUE (org_id, period)``, so a second run, or a concurrent one in
another process, claims nothing); only the claimant asks the processor to charge it. Balances
under the threshold stay uncharged and carry over into the next month.

One organisation's failure never stops the run for the others: a processor that cannot be
asked (:class:`~flexroute.errors.PaymentError`, outcome unknown) leaves that invoice
``charging``, and the run reports it as that organisation's ``error`` and goes on. A later run
takes an invoice left ``charging`` for ``STALE_AFTER`` (its run died mid-charge, or the
processor could not be asked) and first asks the processor whether an earlier attempt took the
money — its idempotency key may have expired by then (Stripe keeps keys about 24 hours), so
asking again under it could charge twice; only if none did is it charged again, as a new
attempt with a new key (compare and set: of concurrent runs one does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from flexroute.billing.processors import PaymentProcessor
from flexroute.errors import PaymentError
from flexroute.ledger import Invoice, Store, period_of

STALE_AFTER = dt.timedelta(minutes=15)
_STATUS = {"succeeded": "paid", "failed": "failed", "pending": "open"}


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What the run did for one organisation: an invoice charged, or the error that stopped
    its charge (``invoice`` is then the one left ``charging``, if it was claimed)."""

    org_id: str
    invoice: Invoice | None
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"org_id": self.org_id}
        if self.invoice is not None:
            out.update(self.invoice.to_json())
        if self.error is not None:
            out["error"] = self.error
        return out


async def charge_invoice(
    store: Store,
    processor: PaymentProcessor,
    invoice: Invoice,
    on_change: Callable[[str], None] | None = None,
) -> Invoice:
    """One charge attempt for a ``charging`` invoice; the outcome and the org's state are
    written together."""
    org = await store.org(invoice.org_id)
    result = await processor.charge(
        org,
        invoice.amount,
        idempotency_key=invoice.idempotency_key,
        invoice_id=invoice.invoice_id,
    )
    settled = await store.settle_invoice(
        invoice.invoice_id, _STATUS[result.status], result.reason, result.reference
    )
    if on_change is not None:
        on_change(invoice.org_id)
    return settled


async def billing_run(
    store: Store,
    processor: PaymentProcessor,
    *,
    at: dt.datetime,
    threshold: Decimal,
    on_change: Callable[[str], None] | None = None,
) -> list[RunOutcome]:
    """Charge every due organisation for the period containing ``at``; return what this run
    charged (nothing for organisations already invoiced for the period)."""
    period, end = period_of(at)
    outcomes: list[RunOutcome] = []
    for org_id in await store.org_ids():
        invoice: Invoice | None = None
        try:
            for invoice in await _stale(store, org_id):
                resumed = await resume_charge(store, processor, invoice, on_change)
                if resumed is not None:
                    outcomes.append(RunOutcome(org_id, resumed))
            invoice = await store.claim_invoice(org_id, period, end, threshold)
            if invoice is None:
                continue
            settled = await charge_invoice(store, processor, invoice, on_change)
            outcomes.append(RunOutcome(org_id, settled))
        except PaymentError as error:
            outcomes.append(RunOutcome(org_id, invoice, error=str(error)))
    return outcomes


async def resume_charge(
    store: Store,
    processor: PaymentProcessor,
    invoice: Invoice,
    on_change: Callable[[str], None] | None = None,
) -> Invoice | None:
    """A stale ``charging`` invoice: settled by an earlier attempt that took the money, else
    charged as a new attempt; None when another run took it meanwhile."""
    earlier = await processor.earlier_charge(await store.org(invoice.org_id), invoice)
    if earlier is not None:
        status = _STATUS[earlier.status]
        settled = await store.settle_invoice(invoice.invoice_id, status, None, earlier.reference)
        if on_change is not None:
            on_change(invoice.org_id)
        return settled
    claimed = await store.retry_invoice(invoice)
    return None if claimed is None else await charge_invoice(store, processor, claimed, on_change)


async def _stale(store: Store, org_id: str) -> list[Invoice]:
    """Invoices left ``charging`` by a run that died mid-charge or could not ask."""
    cutoff = dt.datetime.now(dt.UTC) - STALE_AFTER
    return [
        i for i in await store.invoices(org_id) if i.status == "charging" and i.updated_at < cutoff
    ]
