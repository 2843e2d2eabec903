"""Stripe webhook events: card changes and payment results (signature checked first).

* ``payment_intent.succeeded`` / ``payment_intent.payment_failed`` settle the invoice named in
  the intent's metadata (a replayed event changes nothing once the invoice is paid). Events
  come in any order: a failure counts only for the invoice's current attempt (the intent's
  ``attempt_key`` is that attempt's idempotency key; without one, the intent must be the
  invoice's reference, which a new attempt clears), so a late failure of an older attempt never
  undoes a newer one; a success always counts, since that money was taken for the invoice;
* ``payment_method.attached`` and ``customer.updated`` with a default payment method mean a
  card was added or updated: the due charges are retried at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flexroute.billing.state import card_updated
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.ledger import Invoice, Store


async def handle_event(
    store: Store,
    processor: StripeProcessor,
    payload: bytes,
    signature: str | None,
    on_change: Callable[[str], None] | None = None,
) -> str:
    """Apply one webhook delivery; return what was done (for the response and the logs)."""
    event = processor.parse_event(payload, signature)
    kind = str(event.get("type"))
    obj: dict[str, Any] = event.get("data", {}).get("object", {})
    if kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        metadata = obj.get("metadata") or {}
        invoice_id, org_id = metadata.get("invoice_id"), metadata.get("org_id")
        if not invoice_id or not org_id:
            return "ignored: not a flexroute charge"
        invoices = {i.invoice_id: i for i in await store.invoices(str(org_id))}
        invoice = invoices.get(str(invoice_id))
        if invoice is None or invoice.status == "paid":
            return "ignored: settled already"
        if kind == "payment_intent.payment_failed" and not _current(obj, invoice):
            return "ignored: the failure of an earlier attempt"
        if kind == "payment_intent.succeeded":
            await store.settle_invoice(invoice.invoice_id, "paid", None, obj.get("id"))
        else:
            error = obj.get("last_payment_error") or {}
            reason = str(error.get("code") or "payment_failed")
            await store.settle_invoice(invoice.invoice_id, "failed", reason, obj.get("id"))
        if on_change is not None:
            on_change(str(org_id))
        return f"settled {invoice.invoice_id}"
    if kind in ("payment_method.attached", "customer.updated"):
        customer = obj.get("customer") if kind == "payment_method.attached" else obj.get("id")
        if kind == "customer.updated" and not (obj.get("invoice_settings") or {}).get(
            "default_payment_method"
        ):
            return "ignored: no default card"
        if not customer:
            return "ignored: no customer"
        org_id = await processor.org_of_customer(str(customer))
        if org_id is None:
            return "ignored: not a flexroute customer"
        await card_updated(store, processor, org_id, str(customer), on_change)
        return f"card updated for {org_id}"
    return f"ignored: {kind}"


def _current(intent: dict[str, Any], invoice: Invoice) -> bool:
    """Whether the PaymentIntent is the invoice's current attempt."""
    key = (intent.get("metadata") or {}).get("attempt_key")
    if key is not None:
        return bool(key == invoice.idempotency_key)
    return intent.get("id") is not None and intent.get("id") == invoice.reference
