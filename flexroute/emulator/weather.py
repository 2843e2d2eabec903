"""Flex weather: a seeded Markov process of one model's flex capacity over time.

Flex capacity comes and goes in waves. The weather of one model is a continuous-time Markov
chain over four states, with transition rates per second given by a :class:`Climate`:

    calm ──▶ degraded ──▶ outage ──▶ recovery ──▶ calm
      ◀──────────┘                      └──▶ outage (relapse)

Inside each state a second, faster two-state chain (*clear* / *burst*) makes refusals come in
bursts: a burst starts at ``burst_rate`` per second and lasts ``burst_mean`` seconds on average
(exponentially). The product of the two chains is itself a Markov chain, generated lazily as a
sequence of segments ``(start, state, burst)`` from ``random.Random(f"{seed}:{model}")``: the
same seed, model and time always give the same weather.

One *attempt* at time ``t`` (seconds of process time) is then drawn from its own seeded
generator, keyed by (seed, model, request key, attempt number): it is refused with the state's
``refuse`` probability (``burst_refuse`` inside a burst), with a ``Retry-After`` drawn uniformly
from the state's ``retry_after`` range; otherwise flex starts after a lognormal delay
``start_median * exp(start_sigma * N(0, 1))`` (capped at ``start_max``).

:meth:`Weather.verdict` is what a client that honours ``Retry-After`` would meet: the attempts
at ``t``, ``t + r1``, ``t + r1 + r2``… until one is accepted (or ``horizon`` passes). The
benchmarks send it to the emulator as an ``x-emulator`` header; the emulator with
``EmulatorConfig(weather=SEED)`` draws each attempt itself, at the wall-clock moment it comes.
Both use :meth:`Weather.attempt`, so both follow one process.
"""

from __future__ import annotations

import bisect
import enum
import math
import random
from dataclasses import dataclass, field


class State(enum.StrEnum):
    CALM = "calm"
    DEGRADED = "degraded"
    OUTAGE = "outage"
    RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class Conditions:
    """How flex behaves in one state. Times in seconds, rates per second."""

    refuse: float  # probability an attempt is refused, outside a burst
    start_median: float  # lognormal start delay of an accepted attempt
    start_sigma: float
    retry_after: tuple[float, float]  # Retry-After of a refusal, drawn uniformly in [lo, hi]
    burst_rate: float = 0.0  # bursts starting per second (outside a burst)
    burst_mean: float = 1.0  # mean burst length
    burst_refuse: float = 0.95  # refusal probability inside a burst
    start_max: float = 60.0


@dataclass(frozen=True, slots=True)
class Climate:
    """The chain's rates (``rates[a][b]``: per second from ``a`` to ``b``) and each state's
    conditions. The chain starts in ``calm``."""

    name: str
    rates: dict[State, dict[State, float]]
    conditions: dict[State, Conditions]

    def __post_init__(self) -> None:
        for state in State:
            if state not in self.conditions:
                raise ValueError(f"Climate {self.name}: no conditions for {state}")
            if sum(self.rates.get(state, {}).values()) <= 0:
                raise ValueError(f"Climate {self.name}: {state} has no way out")
            if state in self.rates[state]:
                raise ValueError(f"Climate {self.name}: {state} goes to itself; leave it out")
        for c in self.conditions.values():
            if not (0 <= c.refuse <= 1 and 0 <= c.burst_refuse <= 1):
                raise ValueError(f"Climate {self.name}: refusal probabilities must be in [0, 1]")

    def stationary(self) -> dict[State, float]:
        """The long-run share of time in each state (solves ``pi Q = 0``, ``sum(pi) = 1``)."""
        states = list(State)
        n = len(states)
        # Rows of Q transposed, the last equation replaced by the normalisation.
        matrix = [[0.0] * (n + 1) for _ in range(n)]
        for j, to in enumerate(states):
            for i, frm in enumerate(states):
                if i == j:
                    matrix[j][i] = -sum(self.rates.get(frm, {}).values())
                else:
                    matrix[j][i] = self.rates.get(frm, {}).get(to, 0.0)
        matrix[-1] = [1.0] * n + [1.0]
        for col in range(n):  # Gauss-Jordan with partial pivoting
            pivot = max(range(col, n), key=lambda r: abs(matrix[r][col]))
            matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
            for row in range(n):
                if row != col and matrix[row][col]:
                    factor = matrix[row][col] / matrix[col][col]
                    matrix[row] = [
                        a - factor * b for a, b in zip(matrix[row], matrix[col], strict=True)
                    ]
        return {s: matrix[i][n] / matrix[i][i] for i, s in enumerate(states)}


_CALM = Conditions(0.01, 0.08, 0.7, (0.2, 0.5), burst_rate=0.02, burst_mean=1.0)
_DEGRADED = Conditions(0.15, 0.6, 0.9, (0.5, 1.0), burst_rate=0.15, burst_mean=2.0)
_OUTAGE = Conditions(0.8, 20.0, 0.5, (0.5, 1.5))  # the rest are accepted and never start
_RECOVERY = Conditions(0.3, 0.4, 0.8, (0.5, 1.0), burst_rate=0.2, burst_mean=1.0)
# Both climates share what each state is like; they differ in how often states change.
_CONDITIONS = {
    State.CALM: _CALM,
    State.DEGRADED: _DEGRADED,
    State.OUTAGE: _OUTAGE,
    State.RECOVERY: _RECOVERY,
}

CLIMATES: dict[str, Climate] = {
    # Mostly calm: an outage now and then (about 3% of the time).
    "calm": Climate(
        "calm",
        {
            State.CALM: {State.DEGRADED: 1 / 60},
            State.DEGRADED: {State.CALM: 1 / 8, State.OUTAGE: 1 / 80},
            State.OUTAGE: {State.RECOVERY: 1 / 8},
            State.RECOVERY: {State.CALM: 1 / 6, State.OUTAGE: 1 / 60},
        },
        _CONDITIONS,
    ),
    # Waves: outages of ~15 s, a third of the time or so, with degraded spells between.
    "outage": Climate(
        "outage",
        {
            State.CALM: {State.DEGRADED: 1 / 15},
            State.DEGRADED: {State.CALM: 1 / 10, State.OUTAGE: 1 / 5},
            State.OUTAGE: {State.RECOVERY: 1 / 15},
            State.RECOVERY: {State.CALM: 1 / 6, State.OUTAGE: 1 / 20},
        },
        _CONDITIONS,
    ),
}


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    state: State
    burst: bool


@dataclass(frozen=True, slots=True)
class Attempt:
    """One flex attempt's fate: refused (with ``retry_after``) or started after ``start``."""

    state: State
    refused: bool
    retry_after: float = 0.0
    start: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request arriving at one moment meets, attempt after attempt.

    ``refusals`` is None when flex never accepts within the horizon; ``retry_after`` is the
    mean of the refusals' values (so ``refusals * retry_after`` is the time they cost);
    ``start`` is the accepted attempt's start delay."""

    state: State  # the weather at arrival
    refusals: int | None
    retry_after: float
    start: float

    @property
    def starts_after(self) -> float:
        """Seconds from arrival to flex's first output (``inf``: never)."""
        if self.refusals is None:
            return math.inf
        return self.refusals * self.retry_after + self.start


@dataclass(slots=True)
class Weather:
    """One model's weather: ``Weather(seed, model, climate)``; times are process seconds."""

    seed: int
    model: str
    climate: Climate = CLIMATES["outage"]
    _starts: list[float] = field(default_factory=list, init=False, repr=False)
    _segments: list[Segment] = field(default_factory=list, init=False, repr=False)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(f"weather:{self.seed}:{self.model}")
        self._append(Segment(0.0, State.CALM, False))

    def _append(self, segment: Segment) -> None:
        self._starts.append(segment.start)
        self._segments.append(segment)

    def _extend(self, until: float) -> None:
        rng = self._random
        while self._starts[-1] <= until:
            last = self._segments[-1]
            c = self.climate.conditions[last.state]
            leave = self.climate.rates[last.state]
            toggle = 1.0 / c.burst_mean if last.burst else c.burst_rate
            total = sum(leave.values()) + toggle
            start = last.start + rng.expovariate(total)
            pick = rng.random() * total
            if pick < toggle:
                self._append(Segment(start, last.state, not last.burst))
                continue
            pick -= toggle
            states = list(leave)
            chosen = states[-1]  # should rounding leave ``pick`` past every rate
            for state in states:
                if pick < leave[state]:
                    chosen = state
                    break
                pick -= leave[state]
            self._append(Segment(start, chosen, False))

    def at(self, t: float) -> Segment:
        """The segment of the weather in force at time ``t`` (``t < 0`` reads as 0)."""
        self._extend(t)
        return self._segments[max(0, bisect.bisect_right(self._starts, t) - 1)]

    def segments(self, until: float) -> list[Segment]:
        """Every segment starting before ``until``, in order."""
        self._extend(until)
        return self._segments[: bisect.bisect_left(self._starts, until)]

    def attempt(self, t: float, key: str, number: int = 0) -> Attempt:
        """The fate of attempt ``number`` of request ``key`` made at time ``t``."""
        segment = self.at(t)
        c = self.climate.conditions[segment.state]
        rng = random.Random(f"attempt:{self.seed}:{self.model}:{key}:{number}")
        refuse_draw, low_high, gauss = rng.random(), rng.random(), rng.gauss(0.0, 1.0)
        refuse = c.burst_refuse if segment.burst else c.refuse
        if refuse_draw < refuse:
            low, high = c.retry_after
            return Attempt(segment.state, True, retry_after=round(low + (high - low) * low_high, 3))
        start = min(c.start_max, c.start_median * math.exp(c.start_sigma * gauss))
        return Attempt(segment.state, False, start=round(start, 4))

    def verdict(self, t: float, key: str, horizon: float = 60.0) -> Verdict:
        """What a request arriving at ``t`` meets if each refusal is retried after its
        ``Retry-After``, until an attempt is accepted or ``horizon`` seconds have passed."""
        state, at, waited, number = self.at(t).state, t, 0.0, 0
        while True:
            a = self.attempt(at, key, number)
            if not a.refused:
                mean = waited / number if number else 0.0
                return Verdict(state, number, round(mean, 4), a.start)
            number += 1
            waited += a.retry_after
            at = t + waited
            if waited >= horizon:
                return Verdict(state, None, round(waited / number, 4), 0.0)

    def occupancy(self, until: float) -> dict[State, float]:
        """Share of ``[0, until)`` spent in each state."""
        shares = dict.fromkeys(State, 0.0)
        found = self.segments(until)
        for segment, end in zip(found, [*(s.start for s in found[1:]), until], strict=True):
            shares[segment.state] += end - segment.start
        return {state: share / until for state, share in shares.items()}
