"""The engine's adaptive flex: the availability model, the probe budget and the policy, as the
engine asks for them — a plan before a flex request (:func:`flexroute.routing.adaptive.plan`)
and, while it runs, each attempt's outcome back into the model. Built once per runtime
(:mod:`flexroute.runtime`), so the proxy, the SDK wrapper and ``flexroute batch`` share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flexroute.config import Settings
from flexroute.routing.adaptive import FlexMode, Plan, Policy, Probes, plan
from flexroute.routing.availability import Availability, Key
from flexroute.routing.flex import Watch

__all__ = ["Advisor"]


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
        estimate = self.availability.estimate(key, remaining)
        down = estimate.p is not None and estimate.p < self.policy.threshold
        probe = mode is FlexMode.ADAPTIVE and down and self.probes.allowed(key, estimate)
        chosen = plan(estimate, remaining, mode, self.policy, probe=probe)
        if down:
            self.probes.taken(key, chosen)
        if self.on_plan is not None:
            self.on_plan(key, chosen)
        return chosen

    def watch(self, key: Key, *, probe: bool = False) -> Watch:
        """What a flex attempt for ``key`` reports as it ends (see :mod:`routing.flex`);
        ``probe``: the request probes flex while it is predicted down."""

        def seen(outcome: str, elapsed: float, retry_after: float | None) -> None:
            if outcome == "started":
                if probe:
                    self.availability.recovered(key)
                self.availability.started(key, elapsed)
            elif outcome == "refused":
                self.availability.refused(key, retry_after)
            elif outcome in ("cancelled-at-deadline", "client-closed"):
                self.availability.cut(key, elapsed)
            # errors, stream refusals and client errors say nothing about capacity

        return seen

    def status(self, within: float = 1.0, org: str | None = None) -> list[dict[str, Any]]:
        """Every model's current estimate, for ``GET /flexroute/v1/flex`` (``org``: only that
        organisation's, as a gateway shows its callers)."""
        now = self.availability.clock()
        out = []
        for key in sorted(self.availability.keys()):
            if org is not None and key[2] != org:
                continue
            estimate = self.availability.estimate(key, within)
            merged = self.availability.merged(key)
            probes, skips = self.probes.counts(key)
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
                    "cuts": round(sum(merged.cuts), 2),
                    "start_tail_s": estimate.tail,
                    "refusing_for_s": round(max(0.0, estimate.refusing_until - now), 3),
                    "probes": probes,
                    "skipped": skips,
                }
            )
        return out
