"""Stripe as the payment processor, through the ``stripe`` SDK.

One Stripe customer per organisation (``metadata.org_id``); a card is a PaymentMethod attached
to it and made its default; a charge is an off-session PaymentIntent confirmed at once, with the
invoice's idempotency key (organisation, period, attempt); before a stale invoice is charged
again, the customer's charges are searched for an earlier attempt that succeeded. Stripe errors
are translated here and nowhere else: a card error is a failed charge with Stripe's ``code`` as
the reason; any other error is :class:`~flexroute.errors.PaymentError` (outcome unknown; the
invoice stays ``charging`` for a later run). The SDK is synchronous: calls run on a worker
thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread
import stripe

from flexroute.billing.processors import ChargeResult, to_cents
from flexroute.errors import ConfigError, PaymentError
from flexroute.ledger import Invoice, Org

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CardOutcome:
    """``ok``: the card is attached and the customer's default; else ``reason`` says why."""

    ok: bool
    customer_ref: str
    reason: str | None = None


TIMEOUT = 20.0  # seconds a Stripe call may take a try (the SDK tries up to three times)
# Stripe calls wait on threads of their own: while Stripe is slow they never take the worker
# threads the SQLite store reads on (anyio's default pool, 40 threads)
_THREADS = anyio.CapacityLimiter(8)


class StripeProcessor:
    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        webhook_secret: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        addresses: Any = {"api": api_base.rstrip("/")} if api_base else {}
        # Stripe's SDK waits 80 s a try by default (three tries): a silent Stripe would hold a
        # Billing page, a webhook or a run for minutes
        http = stripe.RequestsClient(timeout=timeout)
        self._client = stripe.StripeClient(api_key, base_addresses=addresses, http_client=http)
        self._webhook_secret = webhook_secret

    async def ensure_customer(self, org: Org) -> str:
        """The org's Stripe customer, created (idempotently) on first use."""
        if org.customer_ref:
            return org.customer_ref
        customer = await self._call(
            lambda: self._client.v1.customers.create(
                params={"metadata": {"org_id": org.org_id}},
                options={"idempotency_key": f"flexroute-customer-{org.org_id}"},
            )
        )
        return str(customer.id)

    async def attach_card(self, org: Org, payment_method: str) -> CardOutcome:
        """Attach ``payment_method`` (``pm_…``) and make it the default for off-session use."""
        customer = await self.ensure_customer(org)
        current = await self._call(lambda: self._client.v1.payment_methods.retrieve(payment_method))
        try:
            if current.customer != customer:  # a SetupIntent's card is attached already
                await self._call(
                    lambda: self._client.v1.payment_methods.attach(
                        payment_method, params={"customer": customer}
                    )
                )
        except _Declined as declined:
            return CardOutcome(False, customer, declined.reason)
        await self._call(
            lambda: self._client.v1.customers.update(
                customer, params={"invoice_settings": {"default_payment_method": payment_method}}
            )
        )
        return CardOutcome(True, customer)

    async def setup_intent(self, org: Org) -> tuple[str, str]:
        """A SetupIntent for the dashboard's card form: ``(customer_ref, client_secret)``.
        The browser confirms it with Stripe.js; the card number never reaches flexroute."""
        customer = await self.ensure_customer(org)
        params: Any = {
            "customer": customer,
            "usage": "off_session",
            "payment_method_types": ["card"],
        }
        intent = await self._call(lambda: self._client.v1.setup_intents.create(params=params))
        return customer, str(intent.client_secret)

    async def use_setup(self, org: Org, setup_intent_id: str) -> CardOutcome:
        """Make the card of a confirmed SetupIntent the org's default. The intent must be
        this org's customer's (else PaymentError) and ``succeeded``."""
        customer = await self.ensure_customer(org)
        intent = await self._call(lambda: self._client.v1.setup_intents.retrieve(setup_intent_id))
        if intent.customer != customer:
            raise PaymentError(f"SetupIntent {setup_intent_id} is not this organisation's")
        if intent.status != "succeeded" or not intent.payment_method:
            error: Any = intent.last_setup_error
            reason = str(error.code) if error is not None and error.code else intent.status
            return CardOutcome(False, customer, reason)
        method = intent.payment_method
        return await self.attach_card(org, method if isinstance(method, str) else method.id)

    async def default_card(self, org: Org) -> str | None:
        """The card on file as people read it (``visa •••• 4242, 12/2034``); None if none."""
        customer_ref = org.customer_ref
        if customer_ref is None:
            return None
        customer = await self._call(lambda: self._client.v1.customers.retrieve(customer_ref))
        settings = customer.invoice_settings
        method = None if settings is None else settings.default_payment_method
        if not method:
            return None
        method_id = method if isinstance(method, str) else method.id
        found = await self._call(lambda: self._client.v1.payment_methods.retrieve(method_id))
        card = found.card
        if card is None:
            return None
        return f"{card.brand} •••• {card.last4}, {card.exp_month:02d}/{card.exp_year}"

    async def charge(
        self, org: Org, amount: Decimal, *, idempotency_key: str, invoice_id: str
    ) -> ChargeResult:
        if org.customer_ref is None or org.card_status != "valid":
            return ChargeResult("failed", reason="no_card")
        customer_ref = org.customer_ref
        customer = await self._call(lambda: self._client.v1.customers.retrieve(customer_ref))
        settings = customer.invoice_settings
        method = None if settings is None else settings.default_payment_method
        if not method:
            return ChargeResult("failed", reason="no_card")
        params: Any = {
            "amount": to_cents(amount),
            "currency": "usd",
            "customer": customer_ref,
            "payment_method": method if isinstance(method, str) else method["id"],
            "off_session": True,
            "confirm": True,
            # the attempt's own key: a webhook for an older attempt is known as such
            "metadata": {
                "org_id": org.org_id,
                "invoice_id": invoice_id,
                "attempt_key": idempotency_key,
            },
        }
        try:
            intent = await self._call(
                lambda: self._client.v1.payment_intents.create(
                    params=params, options={"idempotency_key": idempotency_key}
                )
            )
        except _Declined as declined:
            return ChargeResult("failed", reason=declined.reason, reference=declined.intent)
        if intent.status == "succeeded":
            return ChargeResult("succeeded", reference=str(intent.id))
        if intent.status in ("processing",):
            return ChargeResult("pending", reference=str(intent.id))
        return ChargeResult("failed", reason="authentication_required", reference=str(intent.id))

    async def earlier_charge(self, org: Org, invoice: Invoice) -> ChargeResult | None:
        """The customer's charges since the invoice was made (listing by customer is strongly
        consistent, unlike search), each checked by its PaymentIntent's ``invoice_id`` (the
        intents come expanded in the same listing, not fetched one by one)."""
        if org.customer_ref is None:
            return None
        params: Any = {
            "customer": org.customer_ref,
            "created": {"gt": int(invoice.created_at.timestamp()) - 300},  # clocks differ
            "limit": 100,
            "expand": ["data.payment_intent"],
        }
        charges = await self._call(
            lambda: list(self._client.v1.charges.list(params=params).auto_paging_iter())
        )
        for charge in charges:
            intent = charge.payment_intent
            if charge.status not in ("succeeded", "pending") or not intent:
                continue
            if isinstance(intent, str):  # not expanded after all: ask for it
                intent = await self._call(partial(self._client.v1.payment_intents.retrieve, intent))
            metadata: dict[str, Any] = intent.to_dict().get("metadata") or {}
            if metadata.get("invoice_id") != invoice.invoice_id:
                continue
            if intent.status == "succeeded":
                return ChargeResult("succeeded", reference=str(intent.id))
            if intent.status == "processing":
                return ChargeResult("pending", reference=str(intent.id))
        return None

    def parse_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The webhook event, after checking its ``Stripe-Signature``; ConfigError when no
        secret is set, PaymentError when the signature does not match."""
        if self._webhook_secret is None:
            raise ConfigError("Stripe webhooks need FLEXROUTE_STRIPE_WEBHOOK_SECRET (whsec_…)")
        try:
            event = self._client.construct_event(payload, signature or "", self._webhook_secret)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise PaymentError(f"Stripe webhook rejected: {exc}") from exc
        data: dict[str, Any] = event.to_dict()
        return data

    async def org_of_customer(self, customer_ref: str) -> str | None:
        customer = await self._call(lambda: self._client.v1.customers.retrieve(customer_ref))
        metadata: Any = customer.metadata or {}
        org_id = metadata.get("org_id")
        return None if org_id is None else str(org_id)

    @staticmethod
    async def _call(fn: Callable[[], _T]) -> _T:
        def run() -> _T:
            try:
                return fn()
            except stripe.CardError as exc:
                error = exc.error
                intent = getattr(error, "payment_intent", None) if error else None
                raise _Declined(
                    exc.code or "card_declined",
                    None if intent is None else str(intent.get("id")),
                ) from exc
            except stripe.StripeError as exc:
                raise PaymentError(f"Stripe: {exc.user_message or exc}") from exc

        return await anyio.to_thread.run_sync(run, limiter=_THREADS)


class _Declined(Exception):  # noqa: N818 -- a card decline is an outcome, caught beside
    def __init__(self, reason: str, intent: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.intent = intent
