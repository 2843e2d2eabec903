"""Adaptive flex: how much of its budget a flex request spends, given what flex did lately.

A pure decision (:func:`plan`) over the availability model's estimate
(:mod:`flexroute.routing.availability`) for the request's remaining budget ``B``:

- mode ``always`` (header ``x-flex-mode: always``, or the operator's ``FLEXROUTE_FLEX_MODE``):
  flex with the whole budget, as if nothing were known;
- estimate unknown (too few observations): flex with the whole budget;
- ``P(start within B) < threshold``: straight to standard, reason
  ``flex-predicted-unavailable`` — unless this request is a *probe* (:class:`Probes`), which
  tries flex so that a recovery is seen;
- an attempt still waiting after ``t < B`` would have less than ``hope`` (5%) chance of
  starting before the deadline (``(q(B) - q(t)) / (1 - q(t))``, with ``q`` the share of
  accepted attempts started by then, from at least ``min_starts`` starts): flex for ``t``
  only, reason ``flex-budget-shortened`` — the wait the starts seen lately fit in — when that
  spends at most half the budget (a small cut saves little wait and loses the late starts);
- otherwise flex with the whole budget.

A plan never spends more than ``B``: the deadline stays ``received_at + start_within``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flexroute.errors import RequestRejected
from flexroute.routing.availability import Estimate, Key
from flexroute.routing.decide import Reason

__all__ = ["FlexMode", "Plan", "Policy", "Probes", "flex_mode", "plan"]

MODE_HEADER = "x-flex-mode"


class FlexMode(enum.StrEnum):
    ADAPTIVE = "adaptive"
    ALWAYS = "always"


def flex_mode(header: str | None, default: FlexMode) -> FlexMode:
    """The request's flex mode: its ``x-flex-mode`` header, else the operator's default."""
    if header is None:
        return default
    try:
        return FlexMode(header.strip().lower())
    except ValueError:
        allowed = ", ".join(repr(str(m)) for m in FlexMode)
        raise RequestRejected(
            400,
            f"{MODE_HEADER} {header!r} is not a flex mode: send one of {allowed} (or leave the "
            f"header out for the operator's default, {str(default)!r}).",
            code="invalid_flex_mode",
            param=MODE_HEADER,
        ) from None


@dataclass(frozen=True, slots=True)
class Policy:
    """The operator's adaptive settings (see the README's settings table)."""

    threshold: float = 0.2  # below this P(start within the budget), skip flex
    hope: float = 0.05  # below this chance left of starting before the deadline, stop waiting
    cut: float = 0.5  # ...but only when that spends at most this share of the budget
    min_starts: float = 20.0  # starts seen (time-discounted) before a budget may be shortened


@dataclass(frozen=True, slots=True)
class Plan:
    """What a flex request does: spend ``budget`` seconds on flex (0: skip it)."""

    budget: float
    reason: Reason | None  # FLEX_PREDICTED_UNAVAILABLE or FLEX_SHORTENED; None: as usual
    p: float | None  # the predicted P(start within the remaining budget), for the ledger
    probe: bool = False

    @property
    def skip(self) -> bool:
        return self.budget <= 0

    @property
    def decision(self) -> str:
        """A bounded label for metrics: ``flex``, ``skipped``, ``shortened`` or ``probe``."""
        if self.probe:
            return "probe"
        if self.skip:
            return "skipped"
        return "shortened" if self.reason is Reason.FLEX_SHORTENED else "flex"


def plan(
    estimate: Estimate, remaining: float, mode: FlexMode, policy: Policy, *, probe: bool
) -> Plan:
    """The plan for a request with ``remaining`` seconds of budget; ``probe`` says whether
    the probe budget lets this request try flex although flex is predicted down."""
    p = estimate.p
    if mode is FlexMode.ALWAYS or p is None:
        return Plan(remaining, None, p)
    short = _shortened(estimate, remaining, policy)
    if p < policy.threshold:
        if probe:
            return Plan(remaining if short is None else short, None, p, probe=True)
        return Plan(0.0, Reason.PREDICTED_UNAVAILABLE, p)
    if short is not None:
        return Plan(short, Reason.FLEX_SHORTENED, p)
    return Plan(remaining, None, p)


def _shortened(estimate: Estimate, remaining: float, policy: Policy) -> float | None:
    """The wait after which an accepted attempt that has not started yet has less than
    ``hope`` chance of starting before the deadline: ``(q(B) - q(t)) / (1 - q(t))``,
    with ``q`` the accepted attempts' start curve (None: never, or too few starts seen)."""
    curve = estimate.curve
    if len(curve) < 2 or estimate.starts < policy.min_starts:
        return None
    q_end = curve[-1][1]
    for t, q in curve[:-1]:
        if q < 1.0 and (q_end - q) / (1.0 - q) < policy.hope:
            return t if t <= policy.cut * remaining else None
    return None


@dataclass(slots=True)
class _ProbeState:
    last: float = float("-inf")
    skipped: int = 0  # requests skipped since the last probe
    probes: int = 0
    skips: int = 0


@dataclass(slots=True)
class Probes:
    """The probe budget while flex is predicted down: per model, at most one probe per
    ``interval`` seconds and at most one in ``every`` such requests; none while a
    ``Retry-After`` is pending (it would be refused)."""

    interval: float = 1.0
    every: int = 3
    clock: Callable[[], float] = time.time
    max_models: int = 1000
    _state: dict[Key, _ProbeState] = field(default_factory=dict)

    def _of(self, key: Key) -> _ProbeState:
        state = self._state.get(key)
        if state is None:
            if len(self._state) >= self.max_models:
                self._state.pop(next(iter(self._state)))
            state = self._state[key] = _ProbeState()
        return state

    def allowed(self, key: Key, estimate: Estimate) -> bool:
        """Whether the next request predicted down for ``key`` may probe (not yet taken)."""
        now = self.clock()
        state = self._of(key)
        return (
            not estimate.refusing(now)
            and now - state.last >= self.interval
            and state.skipped + 1 >= self.every
        )

    def taken(self, key: Key, chosen: Plan) -> None:
        """Count ``chosen`` (a plan made while flex was predicted down)."""
        state = self._of(key)
        if chosen.probe:
            state.last, state.skipped = self.clock(), 0
            state.probes += 1
        elif chosen.skip:
            state.skipped += 1
            state.skips += 1

    def counts(self, key: Key) -> tuple[int, int]:
        """(probes, skips) for ``key`` in this process."""
        state = self._state.get(key)
        return (0, 0) if state is None else (state.probes, state.skips)
