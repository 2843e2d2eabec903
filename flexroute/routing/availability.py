"""Flex availability: what flex attempts showed lately, as P(flex starts within t).

The model
---------
Each flex attempt flexroute makes for a (provider, model, organisation) is one *observation*
of weight 1 (the organisation because providers limit per key: in sidecar mode there is one).
Older observations count less in two ways: each new observation of the model leaves every
older one ``1 - 1/memory`` of its weight (so the estimate follows the last ``memory`` or so
attempts, however busy the model — flex capacity changes in seconds), and every weight halves
every ``half_life`` seconds (so a model not tried lately drifts back to *unknown*). A *probe*
(an attempt made while flex was predicted down) that starts ends the predicted outage: the
refusals and cuts seen so far are forgotten, as a circuit breaker closes on its first success,
and so are those still to come from attempts sent before it (an attempt cut a budget after it
was sent says how flex was when it was sent, not how it is after the recovery). The moment of
the recovery travels with the summaries other processes read: there a summary that has not
seen it yet counts without its refusals and cuts, and a process that reads of a later
recovery than its own forgets its own outage too.
An attempt ends one of three ways that say something about capacity:

- **started** after ``s`` seconds (attempt sent → first output): a *start at s*;
- **refused** (HTTP 429/503, ``resource_unavailable``, an in-stream ``flex_unavailable``): this
  attempt never starts, and the request tries again after the ``Retry-After`` (or the backoff,
  :data:`BACKOFF_WAIT`); the wait is kept with the refusal. A ``Retry-After`` also marks flex
  *refusing until* then;
- **cut** after ``c`` seconds with no output (cancelled at the deadline, or the client left):
  it did not start within ``c`` — and nothing is known about later (a censored observation).

What a request needs to know is whether *it* starts within its budget ``t``, retries
included. Of the accepted attempts, ``q(t)`` had started by ``t``: the share of the accepted
observations that say anything about ``t``, ``S(≤ t) / (S + C(≥ t))``, with ``S(≤ t)`` the
decayed weight of starts at or before ``t``, ``S`` of all starts and ``C(≥ t)`` of cuts that
waited at least ``t`` (a cut shorter than ``t`` says nothing about ``t``; while nothing says,
``q(t)`` is 1: flex that takes an attempt is taken to start it). A refused attempt
is tried again after the mean wait ``w`` of the refusals, if that leaves budget. Whether a
*retry* is refused is counted apart from whether a request's first attempt is — ``r₀`` of the
first attempts refused, ``r₁`` of the retries (½ while no retry was seen) — because refusals
are not independent: where flex refuses everything, the retries of a refused request are
refused too, and where it refuses in a short wave, they get through. The request starts
within ``t`` with::

    P(start within t) = (1 - r₀) q(t) + r₀ Σₖ r₁ᵏ⁻¹ (1 - r₁) q(t - k·w)    k = 1, 2, … while k·w < t

So refusals lower P at every ``t``, a short ``Retry-After`` inside a long budget lowers it
little when retries start, and flex that refuses retries too is predicted down for any
budget. While ``S + R + C(≥ t)`` is below ``min_observations`` the estimate is *unknown* and
flex is tried as if nothing were known.

Times go into a fixed grid of buckets (:data:`EDGES`): a start counts linearly inside its
bucket, a cut up to its bucket's upper edge (cuts come at a deadline, which the next
request's budget nearly repeats). So a model's summary is a few dozen numbers: it is what
workers and replicas share (:mod:`flexroute.routing.sharing`), and summaries of one model
merge by adding their weights brought to the same moment. The *tail* of the start
distribution (the wait by which ``1 - TAIL`` of the starts had happened) and the *start curve*
of accepted attempts, ``q(t)`` = starts by ``t`` / (starts + cuts after ``t``), are read from
start and cut times discounted by time only (how long an accepted attempt takes to start
changes more slowly than whether flex takes attempts); the curve is what lets a request spend
only part of its budget (:mod:`flexroute.routing.adaptive`).

Synchronous, no I/O; the clock (wall seconds, so that processes can merge) is injected.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKOFF_WAIT",
    "EDGES",
    "Availability",
    "Estimate",
    "Key",
    "Summary",
    "combined",
    "probability",
    "refusal_shares",
    "start_tail",
]

# Upper edges of the time buckets, seconds (the first bucket starts at 0; the last is open).
EDGES: tuple[float, ...] = (
    0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0,
    16.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0, 512.0, 900.0,
)  # fmt: skip
TAIL = 0.02  # the share of starts allowed beyond the tail
# the wait before the retry of a refusal without Retry-After: the first wait of the flex
# attempt's backoff (flexroute.routing.flex.DEFAULT_BACKOFF, 0.25 s plus up to 0.25 s jitter)
BACKOFF_WAIT = 0.375
_MIN_WAIT = 0.05  # a Retry-After of 0 is retried at once: each retry still costs a round trip
_MAX_RETRIES = 64  # P's sum stops here (and once what is left of it is negligible)
# (provider, model, organisation): a provider limits per key, so in gateway mode one
# organisation's refusals (say, its own rate limit) never steer another's requests
Key = tuple[str, str, str]


def _bucket(seconds: float) -> int:
    return min(bisect.bisect_left(EDGES, seconds), len(EDGES) - 1)


def _lower(index: int) -> float:
    return 0.0 if index == 0 else EDGES[index - 1]


def _share_below(index: int, t: float) -> float:
    """How much of bucket ``index`` lies at or below ``t`` (linear inside the bucket)."""
    lo, hi = _lower(index), EDGES[index]
    if t >= hi:
        return 1.0
    if t <= lo:
        return 0.0
    return (t - lo) / (hi - lo)


_ARRAYS = ("starts", "cuts", "shape", "shape_cuts")
_SCALARS = ("refusals", "waits", "retries", "retry_refusals")  # added up like the arrays


@dataclass(slots=True)
class Summary:
    """One model's decayed observations as of ``at`` (wall seconds): mergeable, small.

    ``starts``, ``cuts`` and ``refusals`` are the availability evidence (discounted by time
    and by newer observations); ``shape`` and ``shape_cuts`` hold the start and cut times
    again, discounted by time only: how long an accepted attempt takes to start changes more
    slowly than whether flex takes attempts, and the start curve and tail are read from them."""

    at: float
    starts: list[float] = field(default_factory=lambda: [0.0] * len(EDGES))
    cuts: list[float] = field(default_factory=lambda: [0.0] * len(EDGES))
    refusals: float = 0.0
    refusing_until: float = 0.0  # the latest Retry-After's end
    shape: list[float] = field(default_factory=lambda: [0.0] * len(EDGES))
    shape_cuts: list[float] = field(default_factory=lambda: [0.0] * len(EDGES))
    recovered_at: float = 0.0  # wall seconds of the last recovery this summary has seen
    since: float = 0.0  # when its process began observing the model (nothing is older)
    waits: float = 0.0  # the refusals' waits before their retries, weighted like them
    retries: float = 0.0  # attempts that followed a refusal of their request, weighted alike
    retry_refusals: float = 0.0  # ...and those of them refused

    def decay_to(self, now: float, half_life: float) -> None:
        """Bring the weights to ``now`` (a moment earlier than ``at`` changes nothing)."""
        if now <= self.at:
            return
        factor = 0.5 ** ((now - self.at) / half_life)
        self.starts = [w * factor for w in self.starts]
        self.cuts = [w * factor for w in self.cuts]
        self._scale(factor)
        self.shape = [w * factor for w in self.shape]
        self.shape_cuts = [w * factor for w in self.shape_cuts]
        self.at = now

    def discount(self, factor: float) -> None:
        """Scale the availability evidence by ``factor`` (a newer observation came)."""
        self.starts = [w * factor for w in self.starts]
        self.cuts = [w * factor for w in self.cuts]
        self._scale(factor)

    def _scale(self, factor: float) -> None:
        self.refusals *= factor
        self.waits *= factor
        self.retries *= factor
        self.retry_refusals *= factor

    def add(self, other: Summary) -> None:
        """Add ``other``'s weights (both already brought to the same moment)."""
        for name in _ARRAYS:
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, [a + b for a, b in zip(mine, theirs, strict=True)])
        for name in _SCALARS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.refusing_until = max(self.refusing_until, other.refusing_until)
        self.recovered_at = max(self.recovered_at, other.recovered_at)
        self.since = min(self.since, other.since)

    def missed(self, recovery: float) -> bool:
        """Whether this summary may hold refusals and cuts from before ``recovery``."""
        return self.recovered_at < recovery and self.since < recovery

    def forget_outage(self, recovered_at: float) -> None:
        """A recovery at ``recovered_at``: the refusals and cuts are forgotten (the starts,
        and the start times of the shape, stay)."""
        self.cuts = [0.0] * len(EDGES)
        self.shape_cuts = [0.0] * len(EDGES)
        self.refusals = self.waits = self.retries = self.retry_refusals = 0.0
        self.refusing_until = 0.0
        self.recovered_at = max(self.recovered_at, recovered_at)

    def copy(self) -> Summary:
        return Summary(self.at, list(self.starts), list(self.cuts), self.refusals,
                       self.refusing_until, list(self.shape), list(self.shape_cuts),
                       self.recovered_at, self.since, self.waits, self.retries,
                       self.retry_refusals)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {n: [round(w, 6) for w in getattr(self, n)] for n in _ARRAYS}
        return data | {
            "at": self.at,
            "refusals": round(self.refusals, 6),
            "waits": round(self.waits, 6),
            "retries": round(self.retries, 6),
            "retry_refusals": round(self.retry_refusals, 6),
            "refusing_until": self.refusing_until,
            "recovered_at": self.recovered_at,
            "since": self.since,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        """A summary another process wrote; raises ValueError/TypeError/KeyError if malformed."""
        arrays = {name: [float(w) for w in data[name]] for name in _ARRAYS}
        if any(len(values) != len(EDGES) for values in arrays.values()):
            raise ValueError("summary of another bucket grid")
        moments = [float(data.get(name, 0.0)) for name in ("recovered_at", "since")]
        # a summary written before waits were kept: its refusals waited the backoff
        moments.append(float(data.get("waits", float(data["refusals"]) * BACKOFF_WAIT)))
        moments += [float(data.get(name, 0.0)) for name in ("retries", "retry_refusals")]
        values = [w for ws in arrays.values() for w in ws] + [float(data["refusals"]), *moments]
        if not all(math.isfinite(w) and w >= 0 for w in values):
            raise ValueError("summary weights and moments must be finite and non-negative")
        return cls(float(data["at"]), arrays["starts"], arrays["cuts"], float(data["refusals"]),
                   float(data["refusing_until"]), arrays["shape"], arrays["shape_cuts"],
                   *moments)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the model says for a wait of ``within`` seconds."""

    within: float
    p: float | None  # P(start within ``within``); None: too little data to say
    observations: float  # the decayed weight that says anything about ``within``
    starts: float  # the weight of start times behind ``tail`` (time-decayed only)
    tail: float | None  # the wait by which 1 - TAIL of the starts happened (None: no starts)
    refusing_until: float  # wall seconds; in the past when no Retry-After is pending
    # (t, q(t)) for the bucket edges below ``within`` and ``within`` itself: q(t) is the share
    # of accepted attempts (refusals left out) that had started by t
    curve: tuple[tuple[float, float], ...] = ()

    def refusing(self, now: float) -> bool:
        return self.refusing_until > now


def probability(
    summary: Summary,
    within: float,
    min_observations: float,
    *,
    retries_only: bool = False,
    overdue: float = 0.0,
) -> tuple[float | None, float]:
    """``(P(start within within), observations)`` of ``summary``, retries included (see the
    module docstring); P None below ``min_observations``. P grows with ``within``: more starts
    count, fewer cuts, more retries fit. ``retries_only``: for a request already refused,
    whose next attempt is a retry (the sum without its first term, ``r₀`` taken as 1).
    ``overdue``: accepted attempts still waiting long past the start tail, counted as
    accepted attempts that do not start (see :mod:`flexroute.routing.advisor`)."""
    starts, refusals = sum(summary.starts), summary.refusals
    observations = starts + refusals + _cuts_beyond(summary.cuts, within) + overdue
    if observations < min_observations - 1e-6:
        return None, observations
    refused_first, known = refusal_shares(summary)
    retry_refused = 0.5 if known is None else known  # unknown: as unknown as a share can be
    if retries_only:
        refused_first = 1.0
    wait = max(_MIN_WAIT, summary.waits / refusals if refusals > 0 else within)
    p, left = 0.0, within
    chance, refused = 1.0 - refused_first, refused_first  # that attempt k is the accepted one
    for _ in range(_MAX_RETRIES):
        accepted = _accepted_share(summary.starts, summary.cuts, left, overdue)
        p += chance * (1.0 if accepted is None else accepted)  # None: nothing says
        left -= wait
        if left <= 0 or refused < 1e-4 or retry_refused >= 1.0:
            break  # no budget for a retry, or no chance left that one is accepted
        chance, refused = refused * (1.0 - retry_refused), refused * retry_refused
    return min(1.0, p), observations


def refusal_shares(summary: Summary) -> tuple[float, float | None]:
    """(r₀, r₁): the shares of first attempts and of retries refused; r₁ None while less
    than half a retry's weight is left to say (P then takes it as ½, so that refused requests
    retry and show whether retries get through: with r₁ taken from r₀, requests stopped at
    their first refusal in a wave of refusals would never show it)."""
    attempts = sum(summary.starts) + summary.refusals + sum(summary.cuts)
    first = attempts - summary.retries
    first_refusals = summary.refusals - summary.retry_refusals
    r0 = _share(first_refusals, first) if first > 1e-9 else _share(summary.refusals, attempts)
    r1 = _share(summary.retry_refusals, summary.retries) if summary.retries >= 0.5 else None
    return r0, r1


def _share(part: float, whole: float) -> float:
    return 0.0 if whole <= 0 else min(1.0, max(0.0, part / whole))


def estimate_of(
    summary: Summary, within: float, min_observations: float, overdue: float = 0.0
) -> Estimate:
    """The model's estimate of ``summary`` for a wait of ``within`` seconds."""
    p, observations = probability(summary, within, min_observations, overdue=overdue)
    curve = _start_curve(summary.shape, summary.shape_cuts, within)
    shape = sum(summary.shape)
    return Estimate(
        within, p, observations, shape, _tail(summary.shape), summary.refusing_until, curve
    )


def combined(summaries: Iterable[Summary], now: float, half_life: float) -> Summary:
    """The sum of ``summaries``, each brought to ``now`` (the inputs stay as they were). A
    summary that has not seen the latest recovery among them counts with its outage
    forgotten: its refusals and cuts are from before that recovery, or from the second or so
    until the exchange told its process about it."""
    copies = [summary.copy() for summary in summaries]
    latest = max((c.recovered_at for c in copies), default=0.0)
    total = Summary(now, since=now)  # add() keeps the earliest since of the inputs
    for other in copies:
        if other.missed(latest):
            other.forget_outage(latest)
        other.decay_to(now, half_life)
        other.at = now
        total.add(other)
    return total


def _cuts_beyond(cuts: list[float], t: float) -> float:
    # a cut counts up to its bucket's upper edge: cuts come at a deadline, and the next
    # request's remaining budget is that deadline's length less a few milliseconds
    return sum(w for i, w in enumerate(cuts) if t <= EDGES[i])


def _start_curve(
    starts: list[float], cuts: list[float], within: float
) -> tuple[tuple[float, float], ...]:
    """``(t, q(t))`` at each bucket edge below ``within`` and at ``within``. At an edge every
    bucket lies wholly below or above it, so ``q`` there is a prefix of ``starts`` over all
    starts plus a suffix of ``cuts``: the same sums :func:`_accepted_share` makes, without its
    per-bucket interpolation (one request's estimate reads a dozen edges)."""
    total = sum(starts)
    curve = []
    for k, edge in enumerate(EDGES):
        if edge >= within:
            break
        accepted = total + sum(cuts[k:])
        if accepted > 0:
            curve.append((edge, min(1.0, sum(starts[: k + 1]) / accepted)))
    last = _accepted_share(starts, cuts, within)
    if last is not None:
        curve.append((within, last))
    return tuple(curve)


def _accepted_share(
    starts: list[float], cuts: list[float], t: float, never: float = 0.0
) -> float | None:
    """Of the accepted attempts that say anything about ``t`` (``never``: as many again that
    will not start), the share started by then."""
    started = sum(w * _share_below(i, t) for i, w in enumerate(starts))
    total = sum(starts) + _cuts_beyond(cuts, t) + never
    return None if total <= 0 else min(1.0, started / total)


def start_tail(summary: Summary) -> float | None:
    """The wait by which ``1 - TAIL`` of the accepted attempts had started (None: no start)."""
    return _tail(summary.shape)


def _tail(starts: list[float]) -> float | None:
    total = sum(starts)
    if total <= 0:
        return None
    seen = 0.0
    for index, weight in enumerate(starts):
        seen += weight
        if seen >= (1.0 - TAIL) * total:
            return EDGES[index]
    return EDGES[-1]


class Availability:
    """The decaying availability model of every (provider, model, organisation) seen here.

    ``peers`` (when set) returns other processes' summaries to merge on read
    (:mod:`flexroute.routing.sharing`); what is learned here is only this process's."""

    def __init__(
        self,
        *,
        half_life: float = 30.0,
        memory: float = 12.0,
        min_observations: float = 2.0,
        clock: Callable[[], float] = time.time,
        max_models: int = 1000,
    ) -> None:
        self.half_life = half_life
        self.keep = 1.0 - 1.0 / memory  # what each new observation leaves of the older ones
        self.min_observations = min_observations
        self.clock = clock
        self.max_models = max_models  # model names come from clients: bounded
        self._own: dict[Key, Summary] = {}
        self.peers: Callable[[], Mapping[Key, Iterable[Summary]]] = dict

    def _summary(self, key: Key) -> Summary:
        """``key``'s summary, brought to now and discounted for the observation to add."""
        now = self.clock()
        summary = self._own.get(key)
        if summary is None:
            if len(self._own) >= self.max_models:
                self._forget_oldest()
            summary = self._own[key] = Summary(now, since=now)
        summary.decay_to(now, self.half_life)
        summary.discount(self.keep)
        return summary

    def _forget_oldest(self) -> None:
        oldest = min(self._own, key=lambda k: self._own[k].at)
        del self._own[oldest]

    def _before_recovery(self, key: Key, after: float) -> bool:
        """Whether an attempt that ended now, ``after`` seconds after it was sent, was sent
        before ``key``'s last recovery (what it says is about the outage that ended)."""
        summary = self._own.get(key)
        return summary is not None and self.clock() - after < summary.recovered_at

    def started(self, key: Key, after: float, *, retry: bool = False) -> None:
        """An attempt started ``after`` seconds after it was sent (``retry``: it followed a
        refusal of its request)."""
        summary, bucket = self._summary(key), _bucket(max(0.0, after))
        summary.starts[bucket] += 1.0
        summary.shape[bucket] += 1.0
        summary.retries += retry

    def refused(self, key: Key, retry_after: float | None, *, retry: bool = False) -> None:
        """An attempt was refused for capacity, with the provider's ``Retry-After`` if any."""
        summary = self._summary(key)
        summary.refusals += 1.0
        summary.retries += retry
        summary.retry_refusals += retry
        summary.waits += BACKOFF_WAIT if retry_after is None else max(0.0, retry_after)
        if retry_after is not None and retry_after > 0:
            summary.refusing_until = max(summary.refusing_until, self.clock() + retry_after)

    def recovered(self, key: Key) -> None:
        """Flex started for a probe while it was predicted down: the outage is taken as over,
        its refusals and cuts forgotten (the starts stay), and so are those of attempts sent
        before it that end later."""
        self._summary(key).forget_outage(self.clock())

    def adopt_recoveries(self) -> None:
        """Take on the recoveries the peers have seen since this process's own last one (their
        summaries are read once a second: until then :func:`combined` forgets the outage)."""
        for key, found in self.peers().items():
            latest = max((summary.recovered_at for summary in found), default=0.0)
            own = self._own.get(key)
            if own is not None and own.missed(latest):
                own.forget_outage(latest)

    def cut(self, key: Key, after: float, *, retry: bool = False) -> None:
        """An attempt was cancelled ``after`` seconds after it was sent, before any output
        (ignored when it was sent before the model's last recovery)."""
        if self._before_recovery(key, after):
            return
        summary, bucket = self._summary(key), _bucket(max(0.0, after))
        summary.cuts[bucket] += 1.0
        summary.shape_cuts[bucket] += 1.0
        summary.retries += retry

    def own(self) -> dict[Key, Summary]:
        """This process's summaries, brought to now (copies: what a process shares)."""
        now = self.clock()
        out = {}
        for key, summary in self._own.items():
            summary.decay_to(now, self.half_life)
            out[key] = summary.copy()
        return out

    def merged(self, key: Key) -> Summary:
        """This process's summary of ``key`` with its peers', brought to now."""
        own = self._own.get(key)
        summaries = [*(() if own is None else (own,)), *self.peers().get(key, ())]
        return combined(summaries, self.clock(), self.half_life)

    def estimate(self, key: Key, within: float) -> Estimate:
        """P(start within ``within`` seconds) for ``key``, from every process's observations."""
        return estimate_of(self.merged(key), within, self.min_observations)

    def keys(self) -> set[Key]:
        """Every (provider, model, organisation) this process or a peer has observed."""
        return set(self._own) | set(self.peers())
