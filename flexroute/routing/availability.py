"""Flex availability: what flex attempts showed lately, as P(flex starts within t).

The model
---------
Each flex attempt flexroute makes for a (provider, model) is one *observation* of weight 1,
and every weight decays exponentially with time: after ``half_life`` seconds it counts half.
An attempt ends one of three ways that say something about capacity:

- **started** after ``s`` seconds (attempt sent → first output): a *start at s*;
- **refused** (HTTP 429/503, ``resource_unavailable``, an in-stream ``flex_unavailable``): this
  attempt never starts. A ``Retry-After`` also marks flex *refusing until* then;
- **cut** after ``c`` seconds with no output (cancelled at the deadline, or the client left):
  it did not start within ``c`` — and nothing is known about later (a censored observation).

The estimate for a wait of ``t`` seconds is the share of observations that say "started within
``t``" among those that say anything about ``t``::

    P(start within t) = S(≤ t) / (S + R + C(≥ t))

with ``S(≤ t)`` the decayed weight of starts at or before ``t``, ``S`` of all starts, ``R`` of
refusals and ``C(≥ t)`` of cuts that waited at least ``t`` (a cut shorter than ``t`` says
nothing about ``t``). While that denominator is below ``min_observations`` the estimate is
*unknown* and flex is tried as if nothing were known.

Times go into a fixed grid of buckets (:data:`EDGES`): a start counts linearly inside its
bucket, a cut up to its bucket's upper edge (cuts come at a deadline, which the next
request's budget nearly repeats). So a model's summary is a few dozen numbers: it is what
workers and replicas share (:mod:`flexroute.routing.sharing`), and summaries of one model
merge by adding their weights brought to the same moment. The *tail* of the start
distribution (the wait by which ``1 - TAIL`` of the starts had happened) is what lets a
request spend only part of its budget (:mod:`flexroute.routing.adaptive`).

Synchronous, no I/O; the clock (wall seconds, so that processes can merge) is injected.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EDGES", "Availability", "Estimate", "Key", "Summary"]

# Upper edges of the time buckets, seconds (the first bucket starts at 0; the last is open).
EDGES: tuple[float, ...] = (
    0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0,
    16.0, 24.0, 32.0, 48.0, 64.0, 128.0, 256.0, 512.0, 900.0,
)  # fmt: skip
TAIL = 0.02  # the share of starts allowed beyond the tail
Key = tuple[str, str]  # (provider, model)


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


@dataclass(slots=True)
class Summary:
    """One model's decayed observations as of ``at`` (wall seconds): mergeable, small."""

    at: float
    starts: list[float] = field(default_factory=lambda: [0.0] * len(EDGES))
    cuts: list[float] = field(default_factory=lambda: [0.0] * len(EDGES))
    refusals: float = 0.0
    refusing_until: float = 0.0  # the latest Retry-After's end

    def decay_to(self, now: float, half_life: float) -> None:
        """Bring the weights to ``now`` (a moment earlier than ``at`` changes nothing)."""
        if now <= self.at:
            return
        factor = 0.5 ** ((now - self.at) / half_life)
        self.starts = [w * factor for w in self.starts]
        self.cuts = [w * factor for w in self.cuts]
        self.refusals *= factor
        self.at = now

    def add(self, other: Summary) -> None:
        """Add ``other``'s weights (both already brought to the same moment)."""
        self.starts = [a + b for a, b in zip(self.starts, other.starts, strict=True)]
        self.cuts = [a + b for a, b in zip(self.cuts, other.cuts, strict=True)]
        self.refusals += other.refusals
        self.refusing_until = max(self.refusing_until, other.refusing_until)

    def copy(self) -> Summary:
        return Summary(self.at, list(self.starts), list(self.cuts), self.refusals,
                       self.refusing_until)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "starts": [round(w, 6) for w in self.starts],
            "cuts": [round(w, 6) for w in self.cuts],
            "refusals": round(self.refusals, 6),
            "refusing_until": self.refusing_until,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        """A summary another process wrote; raises ValueError/TypeError/KeyError if malformed."""
        starts = [float(w) for w in data["starts"]]
        cuts = [float(w) for w in data["cuts"]]
        if len(starts) != len(EDGES) or len(cuts) != len(EDGES):
            raise ValueError("summary of another bucket grid")
        values = [*starts, *cuts, float(data["refusals"])]
        if not all(math.isfinite(w) and w >= 0 for w in values):
            raise ValueError("summary weights must be finite and non-negative")
        return cls(float(data["at"]), starts, cuts, float(data["refusals"]),
                   float(data["refusing_until"]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the model says for a wait of ``within`` seconds."""

    within: float
    p: float | None  # P(start within ``within``); None: too little data to say
    observations: float  # the decayed weight that says anything about ``within``
    starts: float  # the decayed weight of starts (at any wait)
    tail: float | None  # the wait by which 1 - TAIL of the starts happened (None: no starts)
    refusing_until: float  # wall seconds; in the past when no Retry-After is pending

    def refusing(self, now: float) -> bool:
        return self.refusing_until > now


def estimate_of(summary: Summary, within: float, min_observations: float) -> Estimate:
    """The model's estimate of ``summary`` for a wait of ``within`` seconds."""
    started = sum(w * _share_below(i, within) for i, w in enumerate(summary.starts))
    # a cut counts up to its bucket's upper edge: cuts come at a deadline, and the next
    # request's remaining budget is that deadline's length less a few milliseconds
    cut_long = sum(w for i, w in enumerate(summary.cuts) if within <= EDGES[i])
    observations = sum(summary.starts) + summary.refusals + cut_long
    p = None if observations < min_observations else min(1.0, started / observations)
    starts = sum(summary.starts)
    return Estimate(within, p, observations, starts, _tail(summary.starts), summary.refusing_until)


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
    """The decaying availability model of every (provider, model) this process has seen.

    ``peers`` (when set) returns other processes' summaries to merge on read
    (:mod:`flexroute.routing.sharing`); what is learned here is only this process's."""

    def __init__(
        self,
        *,
        half_life: float = 10.0,
        min_observations: float = 3.0,
        clock: Callable[[], float] = time.time,
        max_models: int = 1000,
    ) -> None:
        self.half_life = half_life
        self.min_observations = min_observations
        self.clock = clock
        self.max_models = max_models  # model names come from clients: bounded
        self._own: dict[Key, Summary] = {}
        self.peers: Callable[[], Mapping[Key, Iterable[Summary]]] = dict

    def _summary(self, key: Key) -> Summary:
        now = self.clock()
        summary = self._own.get(key)
        if summary is None:
            if len(self._own) >= self.max_models:
                self._forget_oldest()
            summary = self._own[key] = Summary(now)
        summary.decay_to(now, self.half_life)
        return summary

    def _forget_oldest(self) -> None:
        oldest = min(self._own, key=lambda k: self._own[k].at)
        del self._own[oldest]

    def started(self, key: Key, after: float) -> None:
        """An attempt started ``after`` seconds after it was sent."""
        self._summary(key).starts[_bucket(max(0.0, after))] += 1.0

    def refused(self, key: Key, retry_after: float | None) -> None:
        """An attempt was refused for capacity, with the provider's ``Retry-After`` if any."""
        summary = self._summary(key)
        summary.refusals += 1.0
        if retry_after is not None and retry_after > 0:
            summary.refusing_until = max(summary.refusing_until, self.clock() + retry_after)

    def cut(self, key: Key, after: float) -> None:
        """An attempt was cancelled ``after`` seconds after it was sent, before any output."""
        self._summary(key).cuts[_bucket(max(0.0, after))] += 1.0

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
        now = self.clock()
        summary = self._own.get(key)
        merged = Summary(now) if summary is None else summary.copy()
        merged.decay_to(now, self.half_life)
        for peer in self.peers().get(key, ()):
            other = peer.copy()
            other.decay_to(now, self.half_life)
            other.at = now
            merged.add(other)
        return merged

    def estimate(self, key: Key, within: float) -> Estimate:
        """P(start within ``within`` seconds) for ``key``, from every process's observations."""
        return estimate_of(self.merged(key), within, self.min_observations)

    def keys(self) -> set[Key]:
        """Every (provider, model) this process or a peer has observed."""
        return set(self._own) | set(self.peers())
