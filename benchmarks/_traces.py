"""The savings benchmark's traces: for each request, when it arrives, what it asks and what flex
will do with it (the verdict sent to the emulator as its ``x-emulator`` header).

*Scripted* traces (``calm``, ``busy``, ``bursty``, ``outage``) draw each verdict on its own,
over a few seconds. *Stochastic* traces (``stoch-calm``, ``stoch-outage``) read each verdict
from the seeded Markov process of :mod:`flexroute.emulator.weather` (one per model, in the
``calm`` or ``outage`` climate) at the request's arrival, over a minute or so, so that flex
comes and goes in waves a router can learn from what it sees. A ``stoch-outage`` trace starts
a fifth of its span (at most ``LEAD`` seconds) before the main model's first outage (at 0 if
that comes sooner), so every seed shows one; ``stoch-calm`` starts at 0, whatever comes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from flexroute.emulator.weather import CLIMATES, State, Weather

SCRIPTED = ("calm", "busy", "bursty", "outage")
STOCHASTIC = ("stoch-calm", "stoch-outage")
MODELS = (("gpt-5-mini", 0.55), ("gpt-5", 0.25), ("gpt-5-nano", 0.1), ("gpt-4.1-mini", 0.1))
PROMPTS = (200, 2_000, 20_000)
NEVER = math.inf
LEAD = 12.0
QUEUE_MAX = 30.0  # the emulator holds a flex attempt at most this long (the proxy cancels first)


@dataclass(frozen=True)
class Planned:
    at: float  # arrival, seconds from the batch start
    model: str
    prompt_tokens: int
    tokens: int
    refusals: int | None  # None: refuses every attempt
    retry_after: float
    queue: float
    weather: str | None = None  # the model's weather at arrival (stochastic traces)

    @property
    def flex_starts_after(self) -> float:
        """When flex would start, from arrival (what the oracle knows)."""
        if self.refusals is None:
            return NEVER
        return self.refusals * self.retry_after + self.queue

    def header(self) -> str:
        refuse = "always" if self.refusals is None else str(self.refusals)
        return (
            f"flex_queue={self.queue:.3f};flex_refuse={refuse};retry_after={self.retry_after};"
            f"prompt_tokens={self.prompt_tokens};tokens={self.tokens}"
        )


def build(name: str, seed: int, requests: int, span: float) -> list[Planned]:
    """The seeded trace ``name``: ``requests`` arrivals over ``span`` seconds."""
    if name in STOCHASTIC:
        return stochastic(name, seed, requests, span)
    return scripted(name, seed, requests, span)


def _shape(rng: random.Random) -> tuple[str, int, int]:
    model = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
    return model, rng.choice(PROMPTS), rng.randint(4, 40)


def scripted(scenario: str, seed: int, requests: int, span: float) -> list[Planned]:
    """One scripted scenario: each request's verdict drawn on its own."""
    rng = random.Random(f"{scenario}-{seed}")
    bursts = {w for w in range(64) if rng.random() < 0.35}
    planned = []
    for i in range(requests):
        at = span * i / requests
        model, prompt, tokens = _shape(rng)
        gauss, uniform = rng.gauss(0.0, 1.0), rng.random()
        refusals: int | None
        if scenario == "calm":
            queue, refusals, retry = 0.08 * math.exp(0.8 * gauss), int(uniform < 0.03), 0.2
        elif scenario == "busy":
            queue, retry = 0.8 * math.exp(1.0 * gauss), 0.5
            refusals = 0 if uniform > 0.2 else 1 + int(uniform * 10)
        elif scenario == "bursty":
            window = int(at / (span / 8))
            queue, retry = 0.15 * math.exp(0.8 * gauss), 0.3
            refusals = 1 + int(uniform * 5) if window in bursts else 0
        elif scenario == "outage":  # flex refuses everything in the middle half of the run
            queue, retry = 0.1 * math.exp(0.8 * gauss), 0.5
            refusals = None if 0.25 <= at / span < 0.75 else 0
        else:
            raise ValueError(f"unknown trace {scenario!r}; known: {SCRIPTED + STOCHASTIC}")
        planned.append(Planned(at, model, prompt, tokens, refusals, retry, min(queue, QUEUE_MAX)))
    return planned


def stochastic(name: str, seed: int, requests: int, span: float) -> list[Planned]:
    """One stochastic trace: verdicts read from each model's weather at arrival."""
    climate = CLIMATES[name.removeprefix("stoch-")]
    rng = random.Random(f"{name}-{seed}")
    weathers = {m: Weather(seed, m, climate) for m, _ in MODELS}
    begin = window_start(name, weathers[MODELS[0][0]], min(LEAD, span / 5))
    planned = []
    for i in range(requests):
        at = span * (i + rng.random()) / requests
        model, prompt, tokens = _shape(rng)
        v = weathers[model].verdict(begin + at, key=f"{name}-{seed}-{i}")
        queue = min(v.start, QUEUE_MAX)
        planned.append(
            Planned(at, model, prompt, tokens, v.refusals, v.retry_after, queue, v.state.value)
        )
    return planned


def window_start(name: str, weather: Weather, lead: float) -> float:
    """Where a trace's window begins in its weather's process time."""
    if name != "stoch-outage":
        return 0.0
    t = 0.0
    while True:
        found = [s for s in weather.segments(t + 600.0) if s.state is State.OUTAGE]
        if found:
            return max(0.0, found[0].start - lead)
        t += 600.0
