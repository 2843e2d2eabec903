"""Spend caps on the request path (issue 15, SPEC §8): reserve before the call, reconcile after.

Gateway mode only (a call with a flexroute key). For each (organisation, key) the proxy keeps a
*view*: the caps set for the organisation and the key, and their month's recorded spend and
fees, read from the store at most every ``ttl`` seconds (one fetch at a time per view) and
topped up with what this process records in between. A request of an organisation or key
without caps only reads that view — it never waits on the store beyond the refresh — and
its response shows the month's spend (``x-flexroute-spend-month-usd``).

A request of a capped organisation or key reserves its estimate
(:mod:`flexroute.billing.estimate`) in the store, which admits it only if the month's totals,
every live reservation (of every replica) and this one stay within each cap; the reservation
is deleted once the request's record is written. So concurrent requests, across replicas and
workers, exceed a cap by at most what they cost beyond their estimates. At the cap: 402
``spend_cap_reached`` naming the cap, the spend and the reset time (start of next month, UTC).

Failure policy (README, "Failure behaviour"): every store call here waits at most
``timeout`` seconds (``FLEXROUTE_LEDGER_WRITE_TIMEOUT``). When the store fails or is slower,
the proxy treats it as down for ``retry_every`` seconds and **fails open**: it admits against
its last view of the month plus its own in-flight reservations, so a single replica still
stops at the cap while several may together exceed it by what the others admitted meanwhile.
A reservation whose release fails expires on its own after ``RESERVATION_LIFETIME``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import anyio

from flexroute.billing.estimate import Estimate, estimate
from flexroute.errors import RequestRejected
from flexroute.ledger.base import LedgerRecord, Store
from flexroute.ledger.quota import (
    NO_CAPS,
    Blocked,
    Caps,
    Outcome,
    Reservation,
    Totals,
    blocked,
    month_start,
    next_month,
)
from flexroute.money import ZERO, format_usd

if TYPE_CHECKING:
    from flexroute.context import RequestContext

__all__ = ["RESERVATION_LIFETIME", "Hold", "Quota", "spend_cap_reached"]

log = logging.getLogger("flexroute.quota")
_T = TypeVar("_T")

# Longer than any request may take (15 min of start_within plus the upstream bounds' usual
# total); a reservation left by a killed replica stops holding headroom after it.
RESERVATION_LIFETIME = dt.timedelta(minutes=30)


@dataclass(slots=True)
class _View:
    month: dt.datetime
    caps: tuple[Caps, Caps] = (NO_CAPS, NO_CAPS)
    recorded: tuple[Totals, Totals] = (Totals(), Totals())  # from the store at ``fetched``
    local: tuple[Totals, Totals] = (Totals(), Totals())  # recorded here since then
    in_flight: Totals = field(default_factory=Totals)  # this process's admitted estimates
    fetched: float = float("-inf")

    @property
    def capped(self) -> bool:
        return self.caps[0].any or self.caps[1].any

    def totals(self) -> tuple[Totals, Totals]:
        return (_add(self.recorded[0], self.local[0]), _add(self.recorded[1], self.local[1]))


@dataclass(frozen=True)  # no slots: a slotted generic dataclass breaks super() on 3.11
class _Answer(Generic[_T]):
    value: _T
    ok: bool = True

    def __bool__(self) -> bool:
        return self.ok


@dataclass(slots=True)
class _Queued:
    reservation: Reservation
    outcome: Outcome | None = None
    done: bool = False


@dataclass(slots=True)
class Hold:
    """One admitted request: its estimate, and the reservation it holds (if capped)."""

    view: _View
    estimate: Estimate
    reservation_id: str | None = None
    settled: bool = False


class Quota:
    def __init__(
        self,
        store: Store,
        *,
        fee_rate: Decimal,
        ttl: float = 2.0,
        timeout: float = 2.0,
        retry_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.fee_rate = fee_rate
        self.ttl = ttl
        self.timeout = timeout
        self.retry_every = retry_every
        self._clock = clock
        self._wall = wall
        self._views: dict[tuple[str, str | None], _View] = {}
        self._pending: dict[tuple[str, str | None], anyio.Event] = {}
        self._down_until = float("-inf")
        self._unreleased: list[str] = []  # reservations to delete once the store answers
        self._releasing = False
        self._queued: dict[str, list[_Queued]] = {}  # reservations waiting for a batch
        self._flushing: dict[str, anyio.Event] = {}  # orgs with a batch at the store

    @property
    def store_down(self) -> bool:
        return self._clock() < self._down_until

    # -- the request path ---------------------------------------------------------------

    async def admit(self, ctx: RequestContext) -> Hold | None:
        """A hold for a gateway request, or RequestRejected(402) at a cap. Sidecar calls
        (no flexroute key) are not capped: None."""
        call = ctx.call
        if call.key_id is None:
            return None
        view = await self._view(call.org_id, call.key_id)
        tier = ctx.decision.tier or ctx.dialect.tier_from_wire(ctx.decision.tier_requested)
        guess = estimate(
            ctx.body,
            len(call.body),
            ctx.prices,
            tier=tier,
            billable=ctx.decision.billable,
            fee_rate=self.fee_rate,
        )
        hold = Hold(view, guess)
        if view.capped:
            await self._reserve(call.org_id, call.key_id, hold)
        view.in_flight = _add(view.in_flight, Totals(guess.cost, guess.fee))
        return hold

    async def settle(self, hold: Hold, record: LedgerRecord | None) -> None:
        """The request is over (``record`` written, or None: it never reached a provider):
        count what it cost and release its reservation. Idempotent."""
        if hold.settled:
            return
        hold.settled = True
        view = hold.view
        view.in_flight = _sub(view.in_flight, Totals(hold.estimate.cost, hold.estimate.fee))
        if record is not None:
            spent = Totals(record.actual_cost or ZERO, record.fee)
            view.local = (_add(view.local[0], spent), _add(view.local[1], spent))
        if hold.reservation_id is not None:
            self._unreleased.append(hold.reservation_id)
            with anyio.CancelScope(shield=True):
                await self._release()

    async def _release(self) -> None:
        """Delete the reservations of finished requests in one batch, one batch at a time;
        those the store could not take (it is down) wait for a later call that finds it up."""
        if self._releasing or self.store_down or not self._unreleased:
            return
        self._releasing = True
        try:
            for _ in range(3):  # those that finished meanwhile too, within a bound
                batch = self._unreleased[:500]
                if not batch or not await self._call(self.store.release(batch), "release"):
                    return
                del self._unreleased[: len(batch)]
        finally:
            self._releasing = False

    async def headers(
        self, org_id: str, key_id: str | None, pending: LedgerRecord | None = None
    ) -> list[tuple[str, str]]:
        """``x-flexroute-spend-month-usd`` and, where a spend cap is set,
        ``x-flexroute-spend-cap-usd``: the key's figures when the key has a spend cap, else
        the organisation's. ``pending`` is the record of the answer these headers go with,
        written once it is delivered: its provider cost counts already."""
        if key_id is None:
            return []
        view = await self._view(org_id, key_id)
        org_total, key_total = view.totals()
        org_cap, key_cap = view.caps
        extra = ZERO if pending is None else pending.actual_cost or ZERO
        if key_cap.spend_cap is not None:
            return _spend_headers(key_total.spend + extra, key_cap.spend_cap)
        return _spend_headers(org_total.spend + extra, org_cap.spend_cap)

    # -- pieces -------------------------------------------------------------------------

    async def _reserve(self, org_id: str, key_id: str, hold: Hold) -> None:
        view, guess = hold.view, hold.estimate
        month = month_start(self._wall())
        reservation = Reservation(org_id, key_id, guess.cost, guess.fee, self._wall()
                                  + RESERVATION_LIFETIME)  # fmt: skip
        outcome = None
        if not self.store_down:
            await self._release()
            outcome = await self._in_store(reservation, month)
        if outcome is not None:
            view.caps = outcome.caps
            if outcome.blocked is not None:
                raise spend_cap_reached(outcome.blocked, next_month(month))
            hold.reservation_id = reservation.reservation_id
            return
        # Fail open on this replica's own view: its month plus its in-flight estimates.
        org_total, key_total = view.totals()
        local = (_add(org_total, view.in_flight), _add(key_total, view.in_flight))
        verdict = blocked(view.caps, local, guess.cost, guess.fee)
        if verdict is not None:
            raise spend_cap_reached(verdict, next_month(month))

    async def _in_store(self, reservation: Reservation, month: dt.datetime) -> Outcome | None:
        """The store's verdict on ``reservation`` (None: the store failed). One
        organisation's reservations go to the store in batches, one batch at a time per
        process: a burst of N requests costs a few transactions, not N waiting for the pool."""
        org_id = reservation.org_id
        entry = _Queued(reservation)
        self._queued.setdefault(org_id, []).append(entry)
        try:
            while not entry.done:
                busy = self._flushing.get(org_id)
                if busy is not None:
                    await busy.wait()
                    continue
                self._flushing[org_id] = event = anyio.Event()
                batch = self._queued.pop(org_id, [])
                try:
                    with anyio.CancelScope(shield=True):  # the batch is others' too
                        answer = await self._call(
                            self.store.reserve([q.reservation for q in batch], month),
                            "reservation",
                        )
                    for i, queued in enumerate(batch):
                        queued.outcome = answer.value[i] if answer.ok else None
                        queued.done = True
                finally:
                    del self._flushing[org_id]
                    event.set()
        except BaseException:  # cancelled (the client left): give back what it got
            if entry.outcome is not None and entry.outcome.blocked is None:
                self._unreleased.append(reservation.reservation_id)
            elif entry in self._queued.get(org_id, []):
                self._queued[org_id].remove(entry)
            raise
        return entry.outcome

    async def _view(self, org_id: str, key_id: str | None) -> _View:
        """The cached view, refreshed when older than ``ttl`` (one fetch at a time); while
        the store is down the last view is kept as it is."""
        key = (org_id, key_id)
        month = month_start(self._wall())
        view = self._views.get(key)
        if view is not None and view.month != month:  # a new month: the caps reset
            view = None
        if view is None:
            view = self._views[key] = _View(month)
        if self._clock() - view.fetched < self.ttl or self.store_down:
            return view
        pending = self._pending.get(key)
        if pending is not None:
            await pending.wait()
            return self._views.get(key, view)
        self._pending[key] = event = anyio.Event()
        try:
            fetched = await self._call(self._fetch(org_id, key_id, month), "cap lookup")
            if fetched.ok:
                view.caps, view.recorded = fetched.value
                view.local = (Totals(), Totals())
                view.fetched = self._clock()
        finally:
            del self._pending[key]
            event.set()
        if len(self._views) > 10_000:
            self._views.clear()
        return view

    async def _fetch(
        self, org_id: str, key_id: str | None, month: dt.datetime
    ) -> tuple[tuple[Caps, Caps], tuple[Totals, Totals]]:
        caps = await self.store.caps(org_id, key_id)
        return caps, await self.store.month_totals(org_id, key_id, month)

    async def _call(self, work: Awaitable[_T], what: str) -> _Answer[_T]:
        """Await ``work`` for at most ``timeout`` s; a failure marks the store down."""
        try:
            with anyio.fail_after(self.timeout):
                return _Answer(await work)
        except Exception as error:  # any store failure: fail open, never fail the request
            self._down_until = self._clock() + self.retry_every
            log.warning(
                "flexroute: spend caps: %s failed (%s: %s); using this replica's own view for %g s",
                what,
                type(error).__name__,
                error,
                self.retry_every,
            )
            return _Answer(cast("_T", None), ok=False)  # value unused when not ok


def spend_cap_reached(verdict: Blocked, resets: dt.datetime) -> RequestRejected:
    """402 ``spend_cap_reached`` with the cap, the month's spend and the reset time."""
    noun = "provider spend" if verdict.kind == "spend" else "flexroute fees"
    whose = "organisation" if verdict.scope == "organization" else "API key"
    message = (
        f"The {whose}'s monthly cap on {noun} is reached: ${_dollars(verdict.total)} of "
        f"${_dollars(verdict.cap)} this month (including requests in flight). Requests resume "
        f"when the cap resets at {resets.isoformat()} or an operator raises it with "
        "`flexroute orgs caps`."
    )
    return RequestRejected(
        402,
        message,
        code="spend_cap_reached",
        error_type="insufficient_quota",
        extra={
            "cap_type": verdict.kind,
            "scope": verdict.scope,
            "cap_usd": format_usd(verdict.cap),
            "spend_usd": format_usd(verdict.total),
            "resets_at": resets.isoformat(),
        },
        retryable=False,
    )


def _spend_headers(spend: Decimal, cap: Decimal | None) -> list[tuple[str, str]]:
    out = [("x-flexroute-spend-month-usd", format_usd(spend))]
    if cap is not None:
        out.append(("x-flexroute-spend-cap-usd", format_usd(cap)))
    return out


def _dollars(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def _add(a: Totals, b: Totals) -> Totals:
    return Totals(a.spend + b.spend, a.fees + b.fees)


def _sub(a: Totals, b: Totals) -> Totals:
    return Totals(max(ZERO, a.spend - b.spend), max(ZERO, a.fees - b.fees))
