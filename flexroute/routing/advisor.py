"""The engine's adaptive flex: the availability model, the probe budget and the policy, as the
engine asks for them — a plan before a flex request (:func:`flexroute.routing.adaptive.plan`)
and, while it runs, each attempt's outcome back into the model. Built once per runtime
(:mod:`flexroute.runtime`), so the proxy, the SDK wrapper and ``flexroute batch`` share it.

A plan is also kept while its request waits on flex (:meth:`Advisor.held`): whenever an
attempt of the same model is refused or cut, the requests still waiting on it are planned again
and a request that would now be skipped (``P < threshold``) stops waiting at once and falls
back, reason ``flex-predicted-unavailable`` — so the requests already in flight when flex goes
down wait no longer than it takes the model to see it. A request is planned again for the
budget it was given, as a new request would be — until its own retry has been refused too:
from then on for what is left of its budget, from its retries only (``P`` with every first
attempt refused: where flex refuses retries, it stops there; one refused retry of its own
first, because a few refused retries of other requests, in a burst that has passed, are thin
evidence against a request that has not retried yet). A probe
(:class:`~flexroute.routing.adaptive.Probes`) stops at its own second refusal instead — it has
then learned what it went for: whether flex takes a first attempt, and whether it takes the
retry of a refused one (the model counts the two apart) — and an attempt of it that was
accepted waits on for the probe's budget, whatever other requests meet. ``always`` requests
are never held. :class:`Follow` does both for one request.

An attempt of a held request that the provider has accepted (HTTP 200, no output yet) and that
has waited more than :data:`OVERDUE` times the model's start tail (at least
:data:`OVERDUE_FLOOR`) counts, while it waits, as an accepted attempt that will not start —
in this process's plans and reviews, not in what it shares: where flex takes attempts and
never starts them, the model learns it before those attempts are cut at their deadlines.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flexroute.config import Settings
from flexroute.routing.adaptive import FlexMode, Plan, Policy, Probes, plan
from flexroute.routing.availability import (
    Availability,
    Estimate,
    Key,
    Summary,
    estimate_of,
    probability,
    refusal_shares,
    start_tail,
)

__all__ = ["Advisor", "Follow", "Waiting"]

_STEP = 0.05  # a refused request's remaining budget is read to this step, rounded down
OVERDUE = 2.0  # an accepted attempt waiting this many start tails counts as one that won't start
OVERDUE_FLOOR = 1.0  # ...and at least this many seconds


@dataclass(slots=True)
class Waiting:
    """One request waiting on flex, as :meth:`Advisor.review` re-plans it."""

    budget: float  # the budget planned, to 10 ms: requests alike share a memo
    deadline: float  # the model's clock
    stop: Callable[[], None]
    refusals: int = 0  # of its attempts
    accepted_at: float | None = None  # its attempt in flight was accepted then (no output yet)

    def question(self, now: float) -> tuple[float, bool]:
        """(the budget to ask P for, whether from retries only), as a memo key."""
        if self.refusals < 2:
            return self.budget, False
        return math.floor(max(0.0, self.deadline - now) / _STEP) * _STEP, True


class Advisor:
    def __init__(
        self,
        availability: Availability,
        probes: Probes,
        policy: Policy,
        *,
        mode: FlexMode = FlexMode.ADAPTIVE,
        on_plan: Callable[[Key, Plan], None] | None = None,
    ) -> None:
        self.availability = availability
        self.probes = probes
        self.policy = policy
        self.mode = mode  # the operator's default (FLEXROUTE_FLEX_MODE)
        self.on_plan = on_plan
        # requests waiting on flex, per model, by token
        self._waiting: dict[Key, dict[int, Waiting]] = {}
        self._tokens = itertools.count()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        on_plan: Callable[[Key, Plan], None] | None = None,
    ) -> Advisor:
        """The advisor the ``FLEXROUTE_FLEX_*`` settings describe."""
        availability = Availability(
            half_life=settings.flex_half_life,
            memory=settings.flex_memory,
            min_observations=settings.flex_min_observations,
            clock=clock,
        )
        probes = Probes(settings.flex_probe_interval, settings.flex_probe_every, clock)
        policy = Policy(threshold=settings.flex_threshold)
        return cls(availability, probes, policy, mode=FlexMode(settings.flex_mode), on_plan=on_plan)

    def plan(self, key: Key, remaining: float, mode: FlexMode) -> Plan:
        """How much of ``remaining`` a flex request for ``key`` spends on flex."""
        estimate, _, _ = self._estimate(key, remaining)
        down = estimate.p is not None and estimate.p < self.policy.threshold
        probe = mode is FlexMode.ADAPTIVE and down and self.probes.allowed(key, estimate)
        chosen = plan(estimate, remaining, mode, self.policy, probe=probe)
        if down:
            self.probes.taken(key, chosen)
        if self.on_plan is not None:
            self.on_plan(key, chosen)
        return chosen

    def follow(self, key: Key, chosen: Plan) -> Follow:
        """What follows one flex request for ``key`` planned as ``chosen``: its attempts'
        outcomes into the model and, in adaptive mode, its wait (see the module docstring)."""
        return Follow(self, key, chosen)

    @contextmanager
    def held(self, key: Key, budget: float, stop: Callable[[], None]) -> Iterator[Waiting]:
        """While inside, a request waiting on flex for ``key`` with ``budget`` seconds is
        re-planned at each :meth:`review` of ``key``: ``stop()`` (at most once) when flex is
        predicted down for it (count its refusals in the entry)."""
        waiting = self._waiting.setdefault(key, {})
        token = next(self._tokens)
        entry = waiting[token] = Waiting(round(budget, 2), self.availability.clock() + budget, stop)
        try:
            yield entry
        finally:
            waiting.pop(token, None)
            if not waiting and self._waiting.get(key) is waiting:
                del self._waiting[key]

    def _estimate(self, key: Key, within: float) -> tuple[Estimate, Summary, int]:
        """The estimate for ``key`` and ``within`` with this process's overdue attempts, and
        the merged summary and overdue count behind it."""
        merged = self.availability.merged(key)
        overdue = self.overdue(key, merged)
        minimum = self.availability.min_observations
        return estimate_of(merged, within, minimum, overdue), merged, overdue

    def overdue(self, key: Key, summary: Summary) -> int:
        """How many of the attempts held for ``key`` were accepted and have waited past the
        overdue limit (see the module docstring); 0 while no start says what the tail is."""
        waiting = self._waiting.get(key)
        tail = start_tail(summary)
        if not waiting or tail is None:
            return 0
        since = self.availability.clock() - max(OVERDUE_FLOOR, OVERDUE * tail)
        return sum(
            1 for e in waiting.values() if e.accepted_at is not None and e.accepted_at < since
        )

    def review(self, key: Key) -> None:
        """Stop the requests waiting on ``key`` that a plan made now would skip: P(start
        within their budget, or from their retries within what is left of it) below the
        threshold (one summary and a memo per distinct question serve them all)."""
        waiting = self._waiting.get(key)
        if not waiting:
            return
        summary = self.availability.merged(key)
        threshold, minimum = self.policy.threshold, self.availability.min_observations
        now = self.availability.clock()
        overdue = self.overdue(key, summary)
        down: dict[tuple[float, bool], bool] = {}
        for token, entry in list(waiting.items()):
            question = entry.question(now)
            verdict = down.get(question)
            if verdict is None:
                within, retries = question
                p, _ = probability(summary, within, minimum, retries_only=retries, overdue=overdue)
                verdict = down[question] = p is not None and p < threshold
            if verdict:
                del waiting[token]
                entry.stop()

    def status(self, within: float = 1.0, org: str | None = None) -> list[dict[str, Any]]:
        """Every model's current estimate, for ``GET /flexroute/v1/flex`` (``org``: only that
        organisation's, as a gateway shows its callers)."""
        now = self.availability.clock()
        out = []
        for key in sorted(self.availability.keys()):
            if org is not None and key[2] != org:
                continue
            estimate, merged, overdue = self._estimate(key, within)
            probes, skips = self.probes.counts(key)
            first, retries = refusal_shares(merged)
            if estimate.p is None:
                state = "unknown"
            elif estimate.refusing(now):
                state = "refusing"
            elif estimate.p < self.policy.threshold:
                state = "predicted-down"
            else:
                state = "available"
            out.append(
                {
                    "provider": key[0],
                    "model": key[1],
                    "org": key[2],
                    "state": state,
                    "within_s": within,
                    "p_start_within": None if estimate.p is None else round(estimate.p, 4),
                    "observations": round(estimate.observations, 2),
                    "starts": round(estimate.starts, 2),
                    "refusals": round(merged.refusals, 2),
                    "refused_first_share": round(first, 4),  # r0 and r1 of the estimate
                    "refused_retry_share": None if retries is None else round(retries, 4),
                    "cuts": round(sum(merged.cuts), 2),
                    "overdue": overdue,
                    "start_tail_s": estimate.tail,
                    "refusing_for_s": round(max(0.0, estimate.refusing_until - now), 3),
                    "probes": probes,
                    "skipped": skips,
                }
            )
        return out


class Follow:
    """One flex request as the advisor follows it: called with each attempt's outcome (a
    :data:`~flexroute.routing.flex.Watch`), and :meth:`hold` around its whole wait."""

    __slots__ = ("_retry", "_stop", "_waiting", "advisor", "key", "plan")

    def __init__(self, advisor: Advisor, key: Key, chosen: Plan) -> None:
        self.advisor, self.key, self.plan = advisor, key, chosen
        self._stop: Callable[[], None] | None = None
        self._waiting: Waiting | None = None
        self._retry = False  # the next attempt follows a refusal of this request

    def __call__(self, outcome: str, elapsed: float, retry_after: float | None) -> None:
        advisor, key, retry = self.advisor, self.key, self._retry
        availability, waiting = advisor.availability, self._waiting
        if outcome == "accepted":  # the attempt goes on: it may become overdue
            if waiting is not None:
                waiting.accepted_at = availability.clock()
            return
        if waiting is not None:
            waiting.accepted_at = None  # the attempt ended
        if outcome == "started":
            if self.plan.probe:
                availability.recovered(key)
            availability.started(key, elapsed, retry=retry)
            return
        if outcome == "refused":
            availability.refused(key, retry_after, retry=retry)
            self._retry = True
            if waiting is not None:
                waiting.refusals += 1
            if retry and self.plan.probe and self._stop is not None:
                self._stop()  # still refusing, retries too: what the probe went to learn
        elif outcome in ("cancelled-at-deadline", "client-closed"):
            availability.cut(key, elapsed, retry=retry)
        else:
            return  # errors, stream refusals and client errors say nothing about capacity
        advisor.review(key)

    @contextmanager
    def hold(self, stop: Callable[[], None]) -> Iterator[None]:
        """While inside, ``stop()`` ends the wait once flex is predicted down for the plan's
        budget (after a refusal or cut of the model), or, for a probe, at its own second refusal
        (an accepted probe waits on: other requests' refusals do not end it)."""
        if self.plan.probe:
            self._stop = stop
            yield
        else:
            with self.advisor.held(self.key, self.plan.budget, stop) as self._waiting:
                yield
