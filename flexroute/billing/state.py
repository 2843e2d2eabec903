"""What operators and card changes do to an organisation's billing state.

* ``mark_paid`` / ``mark_failed`` — the ``manual`` processor's outcomes, from the CLI;
* ``card_updated`` — a card was added or replaced: retry every failed charge at once with a
  new attempt (and idempotency key); a success clears past-due in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from flexroute.billing.processors import PaymentProcessor
from flexroute.billing.run import charge_invoice
from flexroute.ledger import ACTIVE, PAST_DUE, Invoice, Org, Store

_UNSETTLED = ("open", "charging", "failed")


async def mark_paid(store: Store, org_id: str) -> Org:
    """Every unsettled invoice of ``org_id`` was paid outside flexroute; the org is active."""
    for invoice in await store.invoices(org_id):
        if invoice.status in _UNSETTLED:
            await store.settle_invoice(invoice.invoice_id, "paid", None, None)
    org = await store.org(org_id)
    if org.state != ACTIVE:
        await store.set_state(org_id, ACTIVE, None)
    return await store.org(org_id)


async def mark_failed(store: Store, org_id: str, reason: str) -> Org:
    """The org's unsettled charge failed: it is past-due with ``reason`` (even with no
    invoice yet, e.g. an operator suspending billable flex for an unpaid balance)."""
    failed = False
    for invoice in await store.invoices(org_id):
        if invoice.status in ("open", "charging"):
            await store.settle_invoice(invoice.invoice_id, "failed", reason, None)
            failed = True
    if not failed:
        await store.set_state(org_id, PAST_DUE, reason)
    return await store.org(org_id)


async def retry_failed(
    store: Store,
    processor: PaymentProcessor,
    org_id: str,
    on_change: Callable[[str], None] | None = None,
) -> list[Invoice]:
    """Retry each failed invoice of ``org_id`` once (of concurrent callers only one retries)."""
    settled = []
    for invoice in await store.invoices(org_id):
        if invoice.status != "failed":
            continue
        claimed = await store.retry_invoice(invoice)
        if claimed is not None:
            settled.append(await charge_invoice(store, processor, claimed, on_change))
    return settled


async def card_updated(
    store: Store,
    processor: PaymentProcessor,
    org_id: str,
    customer_ref: str | None,
    on_change: Callable[[str], None] | None = None,
) -> Org:
    """A valid card is now on file: record it and retry what is due."""
    await store.set_card(org_id, "valid", customer_ref)
    await retry_failed(store, processor, org_id, on_change)
    if on_change is not None:
        on_change(org_id)
    return await store.org(org_id)
