"""The emulator under flex weather: flex answers follow the seeded capacity process over time."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import urllib.request

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from benchmarks._procs import free_port, stopping, wait_ready
from flexroute.emulator import EmulatorConfig
from flexroute.emulator.weather import CLIMATES, State, Weather
from flexroute.testing import emulator

SEED, MODEL = 3, "gpt-5-mini"


def _middles(state: State) -> list[float]:
    """Mid-points of the first segments of ``state`` (outside bursts) in seed 3's weather."""
    segments = Weather(SEED, MODEL, CLIMATES["outage"]).segments(2_000.0)
    pairs = itertools.pairwise(segments)
    return [(a.start + b.start) / 2 for a, b in pairs if a.state is state and not a.burst]


class Clock:
    """Monotonic seconds that a test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestWeather:
    def test_flex_is_refused_in_an_outage_and_served_in_calm(self) -> None:
        """With weather on, the real openai SDK gets flex served in calm, and 429 (with
        retry-after) or no start at all in an outage; the log names the state met."""
        clock = Clock()
        config = EmulatorConfig(seed=1, weather=SEED, climate="outage")
        with emulator(config, clock) as running:
            client = openai.OpenAI(
                api_key="k", base_url=f"{running.base_url}/v1", max_retries=0, timeout=1.5
            )

            def ask() -> openai.types.chat.ChatCompletion:
                return client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], service_tier="flex"
                )

            calm, outage = _middles(State.CALM)[:5], _middles(State.OUTAGE)[:5]
            assert len(calm) == 5
            assert len(outage) == 5
            for at in calm:
                clock.now = at
                assert ask().service_tier == "flex"
            retry_afters: list[float] = []
            unstarted = 0
            for at in outage:
                clock.now = at
                for _ in range(4):
                    try:
                        ask()
                    except openai.RateLimitError as error:
                        retry_afters.append(float(error.response.headers["retry-after"]))
                    except openai.APITimeoutError:  # accepted but not started in 1.5 s
                        unstarted += 1
                    else:
                        pytest.fail(f"flex served at {at:.1f} s, inside an outage")
            assert len(retry_afters) > unstarted > 0
            assert min(retry_afters) >= 0.5
            states = [r["weather"] for r in running.log()]
            assert states[:5] == ["calm"] * 5
            assert set(states[5:]) == {"outage"}

    def test_scripted_requests_and_the_standard_tier_ignore_the_weather(self) -> None:
        """An x-emulator header still scripts the request, and standard is served in an
        outage: the weather is flex's alone."""
        clock = Clock()
        config = EmulatorConfig(seed=1, weather=SEED, climate="outage")
        with emulator(config, clock) as running:
            client = openai.OpenAI(api_key="k", base_url=f"{running.base_url}/v1", max_retries=0)
            clock.now = _middles(State.OUTAGE)[0]
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
            scripted = client.chat.completions.create(
                model=MODEL, messages=messages, service_tier="flex",
                extra_headers={"x-emulator": "flex_queue=0.01"},
            )  # fmt: skip
            assert scripted.service_tier == "flex"
            standard = client.chat.completions.create(model=MODEL, messages=messages)
            assert standard.service_tier == "default"
            assert [r["weather"] for r in running.log()] == [None, None]

    def test_emulate_command_takes_a_weather_seed(self) -> None:
        """``flexroute emulate --weather SEED`` serves flex from the weather, at wall time."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = ["emulate", "--port", str(port), "--weather", "2", "--climate", "calm"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "flexroute.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with stopping(proc):
            wait_ready(f"{url}/v1/models", timeout=60)
            client = openai.OpenAI(api_key="k", base_url=f"{url}/v1", max_retries=2)
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], service_tier="flex"
            )
            assert answer.service_tier == "flex"
            with urllib.request.urlopen(f"{url}/_emulator/log", timeout=10) as response:  # noqa: S310 -- loopback
                log = json.loads(response.read())
        assert log[-1]["weather"] == "calm"  # seed 2 of the calm climate starts calm

    def test_unknown_climate_is_named(self) -> None:
        """A climate that does not exist is an error naming it and the known ones."""
        with pytest.raises(ValueError, match=r"'rainy' is unknown; use calm, outage"):
            EmulatorConfig(weather=1, climate="rainy")
