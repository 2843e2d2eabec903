"""The gate the engine awaits before every billable flex request (SPEC §4).

A past-due organisation gets 402 with what failed, the amount due and how to clear it; with
free credit on (``FLEXROUTE_FREE_CREDIT_USD``), an organisation whose credit is used up and
that has no card on file gets 402 ``insufficient_quota`` (flex.ai's shape). Every other route
never reaches the gate. States are cached for ``ttl`` seconds per organisation
(another process — the CLI, another replica — may change them); a change made in this process
calls :meth:`BillingGate.forget`, so past-due lifts at once when a charge succeeds here.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

import anyio

from flexroute.billing.processors import CENT
from flexroute.engine import Call
from flexroute.errors import RequestRejected
from flexroute.ledger import PAST_DUE, Org, Store
from flexroute.money import format_usd

_WHAT_FAILED = {
    "no_card": "is due and no card is on file",
    "card_declined": "failed (card declined)",
    "expired_card": "failed (card expired)",
    "insufficient_funds": "failed (insufficient funds)",
}


class BillingGate:
    """Per-organisation verdicts, cached for ``ttl`` seconds and fetched once at a time.

    On the request path only the org's state is read (one indexed row); the full
    :class:`Org` with its sums is read only for a past-due org, to write the 402. Concurrent
    requests of one org share a single lookup, so a burst does not queue N reads.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = anyio.current_time,
        credit: bool = False,
    ) -> None:
        self.store = store
        self.credit = credit  # free credit is on: read the org's sums, not only its state
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, RequestRejected | None]] = {}
        self._pending: dict[str, anyio.Event] = {}

    async def __call__(self, call: Call) -> RequestRejected | None:
        return await self._verdict(call.org_id)

    def forget(self, org_id: str) -> None:
        """Drop the cached state: the next request reads it from the store."""
        self._cache.pop(org_id, None)

    async def _verdict(self, org_id: str) -> RequestRejected | None:
        cached = self._cache.get(org_id)
        if cached is not None and self.clock() - cached[0] < self.ttl:
            return cached[1]
        pending = self._pending.get(org_id)
        if pending is not None:  # another request is fetching this org: share its answer
            await pending.wait()
            shared = self._cache.get(org_id)
            return shared[1] if shared is not None else await self._verdict(org_id)
        self._pending[org_id] = event = anyio.Event()
        try:
            verdict = None
            if self.credit:
                org = await self.store.org(org_id)
                if org.state == PAST_DUE:
                    verdict = payment_required(org)
                elif org.out_of_credit:
                    verdict = insufficient_quota(org)
            elif await self.store.org_state(org_id) == PAST_DUE:
                org = await self.store.org(org_id)
                verdict = payment_required(org) if org.state == PAST_DUE else None
            self._cache[org_id] = (self.clock(), verdict)
        finally:
            del self._pending[org_id]
            event.set()
        return verdict


# The dashboard's Billing page (flexroute.dashboard), which the 402 bodies name; on the proxy's
# own host, so a path (tests/test_dashboard_billing.py opens it from a real 402).
BILLING_PAGE = "/dashboard/billing"


def payment_required(org: Org) -> RequestRejected:
    """The SPEC §4 402: type/code ``payment_required``, ``reason``, ``amount_due_usd``."""
    reason = org.reason or "payment_failed"
    due = org.amount_due if org.amount_due > 0 else org.unpaid_balance
    what = _WHAT_FAILED.get(reason, f"failed ({reason.replace('_', ' ')})")
    charge = "a charge" if reason == "no_card" else "the charge"
    message = (
        f"Billable flex requests are paused: {charge} of ${_dollars(due)} {what}. "
        "Add or update a card on the Billing page, then retry. "
        "Default, priority and auto routing keep working."
    )
    return RequestRejected(
        402,
        message[0].upper() + message[1:],
        code="payment_required",
        error_type="payment_required",
        extra={"reason": reason, "amount_due_usd": format_usd(due), "billing_url": BILLING_PAGE},
    )


def insufficient_quota(org: Org) -> RequestRejected:
    """flex.ai's 402 when the free credit runs out: type ``insufficient_quota``, naming the
    credit used and how to continue."""
    message = (
        f"Insufficient credit: the free credit of ${_dollars(org.credit)} is used up "
        f"(fees owed beyond it: ${_dollars(org.unpaid_balance)}). Add a card on the Billing "
        "page to continue; billable flex requests resume at once. Default, priority and auto "
        "routing keep working."
    )
    return RequestRejected(
        402,
        message,
        code="insufficient_quota",
        error_type="insufficient_quota",
        extra={
            "credit_usd": format_usd(org.credit),
            "credit_left_usd": format_usd(org.credit_left),
            "amount_due_usd": format_usd(org.unpaid_balance),
            "billing_url": BILLING_PAGE,
        },
        retryable=False,
    )


def _dollars(amount: Decimal) -> str:
    return f"{amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"
