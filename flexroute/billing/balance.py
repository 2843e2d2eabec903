"""The balance limit (issue 15 item 3, Together's negative-balance limit): a postpaid
organisation whose unpaid fees not yet invoiced (beyond its free credit) pass
``FLEXROUTE_BALANCE_LIMIT_USD`` is charged at once instead of at month end.

Every ledger record with a fee marks its organisation (:meth:`BalanceLimit.note`, synchronous
and free). A background task of the proxy (:meth:`BalanceLimit.run`, started in the ASGI
lifespan) looks at each marked organisation at most every ``every`` seconds; when its unpaid
balance is above the limit, it claims an early invoice for the fees received so far — period
``YYYY-MM+N``, the N-th early charge of the month, so ``UNIQUE (org_id, period)`` lets exactly
one replica claim it — and charges it through the billing run's own per-invoice charge
(:func:`flexroute.billing.run.charge_invoice`). A failed charge makes the organisation
past-due as at month end; the month-end run then bills what was received after.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from decimal import Decimal

import anyio

from flexroute.billing.processors import PaymentProcessor
from flexroute.billing.run import charge_invoice
from flexroute.errors import FlexrouteError
from flexroute.ledger import Invoice, LedgerRecord, Store, period_of
from flexroute.money import from_pico

__all__ = ["BalanceLimit"]

log = logging.getLogger("flexroute.billing")


class BalanceLimit:
    def __init__(
        self,
        store: Store,
        processor: PaymentProcessor,
        limit: Decimal,
        *,
        every: float = 1.0,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.processor = processor
        self.limit = limit
        self.every = every
        self.on_change = on_change
        self._clock = clock
        self._marked: set[str] = set()
        self._looked: dict[str, float] = {}
        self._wake = anyio.Event()

    def note(self, record: LedgerRecord) -> None:
        """Called for every ledger record: one with a fee may have pushed its org over."""
        if record.fee > 0:
            self._marked.add(record.org_id)
            self._wake.set()

    async def run(self) -> None:
        """Check marked organisations until cancelled (the proxy's lifespan owns this task)."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            now = self._clock()
            due = {
                o for o in self._marked if now - self._looked.get(o, float("-inf")) >= self.every
            }
            self._marked -= due
            for org_id in sorted(due):
                self._looked[org_id] = now
                try:
                    await self.check(org_id)
                except FlexrouteError as error:  # the store or processor is down: next time
                    self._marked.add(org_id)
                    log.warning("flexroute: balance limit check of %s failed: %s", org_id, error)
            if self._marked:  # some were looked at too recently: come back for them
                await anyio.sleep(self.every)
                self._wake.set()

    async def check(self, org_id: str, at: dt.datetime | None = None) -> Invoice | None:
        """Charge ``org_id`` now if its unpaid balance is above the limit; the invoice, or
        None when nothing was charged (under the limit, or another replica claimed it)."""
        org = await self.store.org(org_id)
        invoices = await self.store.invoices(org_id)
        billed = sum((i.amount for i in invoices if i.status != "paid"), Decimal(0))
        if org.unpaid_balance - billed <= self.limit:  # fees not yet on any invoice
            return None
        at = at or dt.datetime.now(dt.UTC)
        month, _ = period_of(at)
        early = [i for i in invoices if i.period.startswith(f"{month}+")]
        period = f"{month}+{len(early) + 1}"
        invoice = await self.store.claim_invoice(org_id, period, at, from_pico(1))
        if invoice is None:
            return None
        log.info(
            "flexroute: %s is over the balance limit (%s USD): charging %s USD now",
            org_id,
            self.limit,
            invoice.amount,
        )
        return await charge_invoice(self.store, self.processor, invoice, self.on_change)
