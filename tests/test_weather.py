"""The flex weather: a seeded Markov process of flex capacity, read by the emulator and the
benchmark alike."""

from __future__ import annotations

import itertools
import math

import pytest

from flexroute.emulator.weather import CLIMATES, Climate, Conditions, State, Weather


class TestProcess:
    def test_same_seed_same_weather_whatever_the_order_of_reads(self) -> None:
        """One seed and model give the same segments and attempts, however time is read."""
        forward = Weather(5, "gpt-5-mini")
        states = [forward.at(t / 2).state for t in range(400)]
        backward = Weather(5, "gpt-5-mini")
        assert [backward.at(t / 2).state for t in reversed(range(400))][::-1] == states
        assert forward.segments(200.0) == backward.segments(200.0)
        assert forward.attempt(12.5, "r1") == backward.attempt(12.5, "r1")
        assert forward.verdict(30.0, "r2") == backward.verdict(30.0, "r2")

    def test_seeds_and_models_differ(self) -> None:
        """Another seed, or another model, has weather of its own."""
        base = Weather(5, "gpt-5-mini").segments(300.0)
        assert Weather(6, "gpt-5-mini").segments(300.0) != base
        assert Weather(5, "gpt-5").segments(300.0) != base

    @pytest.mark.parametrize("climate", sorted(CLIMATES))
    def test_long_run_occupancy_matches_the_stationary_distribution(self, climate: str) -> None:
        """Over a long run the share of time in each state is close to pi solving pi Q = 0."""
        expected = CLIMATES[climate].stationary()
        assert math.isclose(sum(expected.values()), 1.0)
        assert all(share > 0 for share in expected.values())
        found = Weather(11, "gpt-5-mini", CLIMATES[climate]).occupancy(400_000.0)
        for state in State:
            assert found[state] == pytest.approx(expected[state], abs=0.02), state

    def test_stationary_distribution_of_a_two_state_chain(self) -> None:
        """pi is b/(a+b), a/(a+b) for calm ↔ outage at rates a and b (the other two states
        are left at once)."""
        quiet = Conditions(0.0, 0.1, 0.5, (1.0, 1.0))
        climate = Climate(
            "two",
            {
                State.CALM: {State.OUTAGE: 1.0},
                State.OUTAGE: {State.CALM: 3.0},
                State.DEGRADED: {State.CALM: 1e6},
                State.RECOVERY: {State.CALM: 1e6},
            },
            dict.fromkeys(State, quiet),
        )
        pi = climate.stationary()
        assert pi[State.CALM] == pytest.approx(0.75, abs=1e-4)
        assert pi[State.OUTAGE] == pytest.approx(0.25, abs=1e-4)


class TestAttempts:
    def test_outage_refuses_or_never_starts_and_calm_starts_soon(self) -> None:
        """In an outage no attempt starts within seconds; in calm nearly all start at once."""
        weather = Weather(3, "gpt-5-mini")
        segments = weather.segments(5_000.0)
        ends = [s.start for s in segments[1:]]
        outage = [
            (s.start + e) / 2
            for s, e in zip(segments, ends, strict=False)
            if s.state is State.OUTAGE
        ]
        calm = [
            (s.start + e) / 2
            for s, e in zip(segments, ends, strict=False)
            if s.state is State.CALM and not s.burst
        ]
        assert len(outage) > 5
        assert len(calm) > 5
        out = [weather.attempt(t, f"k{i}") for i, t in enumerate(outage * 20)]
        assert all(a.refused or a.start > 2.0 for a in out)
        assert sum(a.refused for a in out) / len(out) == pytest.approx(0.8, abs=0.1)
        assert all(a.retry_after >= 0.5 for a in out if a.refused)
        fine = [weather.attempt(t, f"k{i}") for i, t in enumerate(calm * 20)]
        assert sum(not a.refused and a.start < 1.0 for a in fine) / len(fine) > 0.95

    def test_refusals_come_in_bursts(self) -> None:
        """Outside outages, a refusal makes the next moment's refusal far likelier: the burst
        chain, not independent draws."""
        weather = Weather(9, "gpt-5-mini", CLIMATES["outage"])
        times = [i * 0.2 for i in range(50_000)]
        refused: list[bool | None] = []
        for i, t in enumerate(times):
            if weather.at(t).state is State.OUTAGE:
                refused.append(None)
            else:
                refused.append(weather.attempt(t, f"b{i}").refused)
        pairs = [(a, b) for a, b in itertools.pairwise(refused) if a is not None and b is not None]
        marginal = sum(a for a, _ in pairs) / len(pairs)
        after_refusal = [b for a, b in pairs if a]
        conditional = sum(after_refusal) / len(after_refusal)
        assert marginal < 0.2
        assert conditional > 2.5 * marginal
        bursts = [s for s in weather.segments(10_000.0) if s.burst]
        assert bursts
        assert all(s.state is not State.OUTAGE for s in bursts)

    def test_verdict_sums_the_refusals_retry_afters(self) -> None:
        """A verdict's refusals × mean retry-after is the time its refusals cost, and
        ``starts_after`` adds the accepted attempt's start."""
        weather = Weather(4, "gpt-5-mini")
        verdicts = [weather.verdict(t * 0.7, f"v{t}") for t in range(3_000)]
        refused = [v for v in verdicts if v.refusals]
        assert refused, "some requests meet refusals"
        for v in refused:
            assert v.starts_after == pytest.approx(v.refusals * v.retry_after + v.start)  # type: ignore[operator]
        never = [v for v in verdicts if v.refusals is None]
        assert all(v.starts_after == math.inf for v in never)

    def test_bad_climate_is_rejected(self) -> None:
        """A climate with a state that cannot be left, a state going to itself, or a refusal
        outside [0, 1], is an error naming it."""
        quiet = Conditions(0.0, 0.1, 0.5, (1.0, 1.0))
        rates = {s: {State.OUTAGE if s is State.CALM else State.CALM: 1.0} for s in State}
        with pytest.raises(ValueError, match="calm has no way out"):
            Climate("x", {**rates, State.CALM: {}}, dict.fromkeys(State, quiet))
        with pytest.raises(ValueError, match="to itself"):
            Climate("x", {**rates, State.CALM: {State.CALM: 1.0}}, dict.fromkeys(State, quiet))
        bad = Conditions(1.5, 0.1, 0.5, (1.0, 1.0))
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            Climate("x", rates, {**dict.fromkeys(State, quiet), State.OUTAGE: bad})
