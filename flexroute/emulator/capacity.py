"""The emulator's capacity model: what one attempt will do (refuse, queue, how fast it streams).

Pure and synchronous. Without controls, each request draws from one ``random.Random(seed)``
in arrival order, always the same number of draws, so a seed and a request sequence give the
same plans every run. Flex requests are refused with probability ``flex_refusal_rate`` and
otherwise queue for a lognormal delay (median ``flex_queue_median``), then stream more slowly
than the standard tier; standard and priority requests queue briefly and may be refused when
the standard tier is overloaded (``standard_overload_rate``). ``fast=True`` answers everything
at once, for benchmarks of the code in front of the emulator.

``weather=SEED`` replaces the flex refusal rate and queue by the seeded Markov process of
:mod:`flexroute.emulator.weather` (calm, degraded, outage, recovery, one process per model),
read at the moment each flex attempt arrives: process time is ``weather_start`` plus the
seconds since the model was created or reset (``clock``, monotonic by default) times
``weather_speed``.

A request with an ``x-emulator`` header is scripted instead (see ``controls``).
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from flexroute.emulator.controls import ALWAYS, Controls
from flexroute.emulator.weather import CLIMATES, Weather


class Tier(enum.Enum):
    """A service tier, in the emulator's own words (each wire format names them its way)."""

    STANDARD = "default"
    FLEX = "flex"
    PRIORITY = "priority"


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """The seeded model of flex and standard capacity. All times are in seconds.

    Queue delays are lognormal: ``median * exp(sigma * N(0, 1))``, flex capped at
    ``flex_queue_max``. ``flex_refuse_status`` ``None`` refuses the way the wire format does
    (OpenAI 429 ``resource_unavailable``, Gemini 503 ``UNAVAILABLE``); the standard tier is
    refused as overloaded (OpenAI/Gemini 503, Anthropic 529) at ``standard_overload_rate``.
    """

    seed: int = 0
    fast: bool = False  # answer at once: no queue, refusal or token interval
    flex_refusal_rate: float = 0.1
    flex_refuse_status: int | None = None
    flex_queue_median: float = 1.0
    flex_queue_sigma: float = 1.0
    flex_queue_max: float = 60.0
    flex_token_interval: float = 0.02  # flex streams slower than standard
    standard_queue_median: float = 0.05
    standard_queue_sigma: float = 0.5
    standard_overload_rate: float = 0.0
    standard_token_interval: float = 0.01
    tokens: int = 8  # output pieces per answer
    retry_after: float | None = 1.0  # ``retry-after`` on seeded refusals; None: no header
    log_limit: int | None = 100_000  # attempt records kept (oldest dropped); None: all
    weather: int | None = None  # seed of the flex weather process; None: refusal rate + queue
    climate: str = "outage"  # a name in ``weather.CLIMATES``
    weather_speed: float = 1.0  # process seconds per second of the clock
    weather_start: float = 0.0  # process time at start (and after a reset)

    def __post_init__(self) -> None:
        if self.climate not in CLIMATES:
            known = ", ".join(CLIMATES)
            raise ValueError(f"EmulatorConfig.climate {self.climate!r} is unknown; use {known}")
        if not self.weather_speed > 0:
            raise ValueError("EmulatorConfig.weather_speed must be > 0")
        for name in ("flex_refusal_rate", "standard_overload_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"EmulatorConfig.{name} must be within [0, 1]")
        if self.tokens < 0:
            raise ValueError("EmulatorConfig.tokens must be >= 0")


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int | None  # None: the wire format's usual status for this kind of refusal
    retry_after: float | None
    overloaded: bool = False  # the standard tier is overloaded (not a flex refusal)
    in_stream: str | None = None  # OpenAI: "error" | "failed" inside a 200 stream, not HTTP
    code: str | None = None  # the in-stream refusal's code


@dataclass(frozen=True, slots=True)
class Plan:
    """What one attempt does. ``refusal``/``error_status`` win over everything else."""

    tier_served: Tier
    queue: float = 0.0
    token_interval: float = 0.0
    tokens: int = 8
    refusal: Refusal | None = None
    error_status: int | None = None
    retry_after: float | None = None  # sent with ``error_status`` too
    answer: str = "text"  # "text" | "tool_call" | "refusal"
    break_after: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_12h_tokens: int = 0
    audio_tokens: int = 0
    refuse_stream: bool = False  # OpenAI: streaming refused (400 unsupported_value)
    fault: str | None = None  # a flex attempt that ends before any output (``flex_fault``)
    reasoning: float | None = None  # seconds of silent reasoning after the queue
    weather: str | None = None  # the flex weather's state the attempt met, when weather is on


def refusal_key(client_request_id: str | None, raw_body: bytes) -> str:
    """Which attempts count as "the same request" for ``flex_refuse=N``."""
    if client_request_id:
        return f"id:{client_request_id}"
    return f"body:{hashlib.sha256(raw_body).hexdigest()}"


class CapacityModel:
    """Turns (tier requested, controls) into a ``Plan``; remembers refusals per request."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._random = random.Random(config.seed)
        self._refused: Counter[str] = Counter()
        self._weather: dict[str, Weather] = {}
        self._epoch = clock()

    def reset(self) -> None:
        """Forget refusal counts, restart the seeded sequence and the weather's clock."""
        self._random = random.Random(self.config.seed)
        self._refused.clear()
        self._epoch = self._clock()

    def weather(self, model: str) -> Weather | None:
        """The flex weather of ``model`` (None when weather is off)."""
        seed = self.config.weather
        if seed is None:
            return None
        found = self._weather.get(model)
        if found is None:
            found = self._weather[model] = Weather(seed, model, CLIMATES[self.config.climate])
        return found

    def now(self) -> float:
        """The weather's process time: seconds since start or reset, times the speed."""
        cfg = self.config
        return cfg.weather_start + (self._clock() - self._epoch) * cfg.weather_speed

    def plan(self, tier: Tier, controls: Controls | None, key: str, model: str = "") -> Plan:
        """``key`` names one attempt for the weather (unique per attempt), the request for
        the scripted ``flex_refuse=N`` counts."""
        if controls is None:
            return self._seeded(tier, model, key)
        return self._scripted(tier, controls, key)

    def _scripted(self, tier: Tier, c: Controls, key: str) -> Plan:
        served = Tier(c.serve_tier) if c.serve_tier else tier
        refusal = None
        if tier is Tier.FLEX and c.flex_refuse is not None:
            refused = self._refused[key]
            if c.flex_refuse == ALWAYS or refused < c.flex_refuse:
                self._refused[key] = refused + 1
                refusal = Refusal(
                    c.refuse_status, c.retry_after, in_stream=c.refuse_in_stream, code=c.refuse_code
                )
        queue = c.flex_queue if tier is Tier.FLEX else c.standard_queue
        answer = "tool_call" if c.tool_call else "refusal" if c.refusal else "text"
        return Plan(
            tier_served=served,
            queue=queue or 0.0,
            token_interval=c.token_interval or 0.0,
            tokens=self.config.tokens if c.tokens is None else c.tokens,
            refusal=refusal,
            error_status=c.status,
            retry_after=c.retry_after,
            answer=answer,
            break_after=c.break_after,
            prompt_tokens=c.prompt_tokens,
            cached_tokens=c.cached_tokens or 0,
            reasoning_tokens=c.reasoning_tokens or 0,
            cache_write_tokens=c.cache_write_tokens or 0,
            cache_write_12h_tokens=c.cache_write_12h_tokens or 0,
            audio_tokens=c.audio_tokens or 0,
            refuse_stream=c.refuse_stream,
            fault=c.flex_fault if tier is Tier.FLEX else None,
            reasoning=c.reasoning_time,
        )

    def _seeded(self, tier: Tier, model: str, key: str) -> Plan:
        cfg = self.config
        # Always two draws, whatever the tier, so each request moves the sequence alike.
        refuse_draw, queue_draw = self._random.random(), self._random.gauss(0.0, 1.0)
        if cfg.fast:
            return Plan(tier_served=tier, tokens=cfg.tokens)
        weather = self.weather(model) if tier is Tier.FLEX else None
        if weather is not None:
            fate = weather.attempt(self.now(), key)
            if fate.refused:
                refusal = Refusal(cfg.flex_refuse_status, fate.retry_after)
                return Plan(tier, refusal=refusal, weather=fate.state.value)
            return Plan(
                tier,
                queue=fate.start,
                token_interval=cfg.flex_token_interval,
                tokens=cfg.tokens,
                weather=fate.state.value,
            )
        if tier is Tier.FLEX:
            if refuse_draw < cfg.flex_refusal_rate:
                return Plan(tier, refusal=Refusal(cfg.flex_refuse_status, cfg.retry_after))
            queue = cfg.flex_queue_median * math.exp(cfg.flex_queue_sigma * queue_draw)
            return Plan(
                tier,
                queue=min(queue, cfg.flex_queue_max),
                token_interval=cfg.flex_token_interval,
                tokens=cfg.tokens,
            )
        if refuse_draw < cfg.standard_overload_rate:
            return Plan(tier, refusal=Refusal(None, cfg.retry_after, overloaded=True))
        queue = cfg.standard_queue_median * math.exp(cfg.standard_queue_sigma * queue_draw)
        return Plan(
            tier, queue=queue, token_interval=cfg.standard_token_interval, tokens=cfg.tokens
        )
