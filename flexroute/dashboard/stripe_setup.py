"""Adding or updating a card from the Billing page with Stripe Elements and a SetupIntent.

1. The page's script asks ``POST /dashboard/billing/setup`` (CSRF header) for a SetupIntent
   of the organisation's Stripe customer and gets its client secret.
2. Stripe.js (``FLEXROUTE_STRIPE_JS_URL``) collects the card in its Element and confirms the
   intent directly with Stripe (``confirmCardSetup``): the number never touches flexroute. A
   card Stripe refuses here (e.g. 4000000000000002) is shown by the page from Stripe's error.
3. The script posts the intent's id to ``POST /dashboard/billing/card``; the server asks
   Stripe for the intent (it must be this organisation's customer's and ``succeeded``), makes
   its card the default and retries every failed charge at once
   (:func:`flexroute.billing.state.card_updated`): a success clears past-due before the page
   reloads, as the 402 promises; a decline on charging (4000000000000341) leaves the invoice
   failed with Stripe's reason, which the page shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flexroute.billing.state import card_updated
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.errors import PaymentError
from flexroute.ledger import Org, Store


@dataclass(frozen=True, slots=True)
class CardResult:
    org: Org
    error: str | None  # why the card was not taken, for the page


class CardSetup:
    def __init__(
        self,
        store: Store,
        processor: StripeProcessor,
        publishable_key: str,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.processor = processor
        self.publishable_key = publishable_key
        self._on_change = on_change

    async def start(self, org_id: str) -> str:
        """A SetupIntent's client secret for the org's card form."""
        org = await self.store.org(org_id)
        customer, secret = await self.processor.setup_intent(org)
        if org.customer_ref != customer:  # remember the customer before any card is on file
            await self.store.set_card(org_id, org.card_status, customer)
        return secret

    async def card_on_file(self, org: Org) -> str | None:
        """The default card's brand, last four digits and expiry, asked of Stripe; None when
        there is none or Stripe does not answer (the page then says only the card's state).
        Stripe is asked only for a ``valid`` card, the one state whose line shows it."""
        if org.card_status != "valid":
            return None
        try:
            return await self.processor.default_card(org)
        except PaymentError:
            return None

    async def finish(self, org_id: str, setup_intent_id: str) -> CardResult:
        org = await self.store.org(org_id)
        if not setup_intent_id.startswith("seti_"):
            return CardResult(
                org,
                f"setup_intent {setup_intent_id!r} is not a SetupIntent id "
                "(seti_…); reload the page and add the card again.",
            )
        try:
            outcome = await self.processor.use_setup(org, setup_intent_id)
        except PaymentError as error:
            return CardResult(org, str(error))
        if not outcome.ok:
            await self.store.set_card(org_id, "declined", outcome.customer_ref)
            return CardResult(await self.store.org(org_id), f"Card not taken: {outcome.reason}.")
        org = await card_updated(
            self.store, self.processor, org_id, outcome.customer_ref, self._on_change
        )
        return CardResult(org, None)
