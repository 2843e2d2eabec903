"""Adding or replacing an organisation's card (Stripe): attach it, make it the default, then
retry whatever charge is due so that past-due clears as soon as the charge succeeds."""

from __future__ import annotations

from collections.abc import Callable

from flexroute.billing.state import card_updated
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.ledger import Org, Store


async def add_card(
    store: Store,
    processor: StripeProcessor,
    org_id: str,
    payment_method: str,
    on_change: Callable[[str], None] | None = None,
) -> Org:
    """Attach ``payment_method`` (``pm_…``) to the org's customer; on success retry the due
    charges, on a decline record the card as declined (the org's state is unchanged)."""
    outcome = await processor.attach_card(await store.org(org_id), payment_method)
    if not outcome.ok:
        await store.set_card(org_id, "declined", outcome.customer_ref)
        return await store.org(org_id)
    return await card_updated(store, processor, org_id, outcome.customer_ref, on_change)
