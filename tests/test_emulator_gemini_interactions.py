"""The emulator's Interactions face, driven by google-genai's own ``client.interactions``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import _interactions_errors as errors
from google.genai import types
from google.genai.interactions import (
    FunctionCallStep,
    Interaction,
    InteractionCompletedEvent,
    StepDelta,
    TextDelta,
)

from flexroute.testing import RunningEmulator

MODEL = "gemini-2.5-flash"


@pytest.fixture
def gemini(emu: RunningEmulator) -> genai.Client:
    """The SDK's defaults (API version v1), without its own retries."""
    options = types.HttpOptions(
        base_url=emu.base_url, retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key="gemini-test-key", http_options=options)


def steer(controls: str) -> dict[str, str]:
    return {"x-emulator": controls}


def whole(result: object) -> Interaction:
    """A non-streaming create's result (the SDK types it as a union with its Stream)."""
    assert isinstance(result, Interaction)
    return result


class TestInteractions:
    @pytest.mark.parametrize(
        ("tier", "served"),
        [("flex", "flex"), (None, "standard"), ("standard", "standard"), ("priority", "priority")],
    )
    def test_tier_served_in_the_resource(
        self, gemini: genai.Client, emu: RunningEmulator, tier: Any, served: str
    ) -> None:
        """service_tier is honoured and the tier served comes back in the Interaction."""
        extra = {} if tier is None else {"service_tier": tier}
        interaction = whole(gemini.interactions.create(model=MODEL, input="hello", **extra))
        assert interaction.status == "completed"
        assert interaction.service_tier == served
        assert interaction.output_text == "Flex capacity is cheaper when the queue is."
        [record] = emu.log()
        assert record["path"] == "/v1/interactions"
        assert (record["model"], record["tier_served"]) == (MODEL, served)

    def test_usage_follows_the_controls(self, gemini: genai.Client) -> None:
        """Input, cached, output and thought totals, and the prompt by modality."""
        interaction = whole(
            gemini.interactions.create(
                model=MODEL,
                input="hi",
                extra_headers=steer(
                    "prompt_tokens=100;cached_tokens=40;reasoning_tokens=7;tokens=3;audio_tokens=30"
                ),
            )
        )
        usage = interaction.usage
        assert usage is not None
        assert (usage.total_input_tokens, usage.total_cached_tokens) == (100, 40)
        assert (usage.total_output_tokens, usage.total_thought_tokens) == (3, 7)
        assert usage.total_tokens == 110
        by_modality = usage.input_tokens_by_modality or []
        assert [(m.modality, m.tokens) for m in by_modality] == [("text", 70), ("audio", 30)]

    def test_a_stream_is_the_sdks_event_sequence(self, gemini: genai.Client) -> None:
        """created and a status update, a step's start/deltas/stop, then completed."""
        stream = gemini.interactions.create(
            model=MODEL,
            input="hi",
            stream=True,
            service_tier="flex",
            extra_headers=steer("tokens=3"),
        )
        received = list(stream)
        assert [e.event_type for e in received] == [
            "interaction.created",
            "interaction.status_update",
            "step.start",
            "step.delta",
            "step.delta",
            "step.delta",
            "step.stop",
            "interaction.completed",
        ]
        deltas = [e.delta for e in received if isinstance(e, StepDelta)]
        assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == "Flex capacity is."
        completed = received[-1]
        assert isinstance(completed, InteractionCompletedEvent)
        assert completed.interaction.service_tier == "flex"
        assert completed.interaction.usage is not None
        assert completed.interaction.usage.total_output_tokens == 3

    def test_v1beta_and_the_function_call_step(self, emu: RunningEmulator) -> None:
        """Under /v1beta too; tools given and asked for: a function_call step."""
        client = genai.Client(
            api_key="k", http_options=types.HttpOptions(base_url=emu.base_url, api_version="v1beta")
        )
        interaction = whole(
            client.interactions.create(
                model=MODEL,
                input="weather?",
                tools=[{"type": "function", "name": "lookup"}],
                extra_headers=steer("tool_call=1"),
            )
        )
        [step] = interaction.steps or []
        assert isinstance(step, FunctionCallStep)
        assert (step.name, step.arguments) == (
            "lookup",
            {"location": "Paris, France", "unit": "celsius"},
        )
        assert emu.log()[0]["path"] == "/v1beta/interactions"

    def test_the_flex_queue_delays_the_first_delta_not_the_created_event(
        self, emu: RunningEmulator
    ) -> None:
        """interaction.created goes out at once; the first output waits for the queue."""
        body = {"model": MODEL, "input": "hi", "stream": True, "service_tier": "flex"}
        began = time.monotonic()
        with httpx2.stream(
            "POST", f"{emu.base_url}/v1/interactions", json=body, headers=steer("flex_queue=0.4")
        ) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: interaction.created"
            created_after = time.monotonic() - began
            rest = list(lines)
        assert created_after < 0.3
        assert any('"step.delta"' in line for line in rest)
        [record] = emu.log()
        assert record["first_output_at"] - record["arrived_at"] >= 0.35

    @pytest.mark.parametrize(
        ("status", "code"), [(503, "service_unavailable"), (429, "rate_limit_exceeded")]
    )
    def test_flex_refusals_are_the_sdks_status_errors(
        self, gemini: genai.Client, status: int, code: str
    ) -> None:
        """A refused flex request: the status and Google's string code, parsed by the SDK."""
        with pytest.raises(errors.APIStatusError) as caught:
            gemini.interactions.create(
                model=MODEL,
                input="hi",
                service_tier="flex",
                extra_headers=steer(f"flex_refuse=1;refuse_status={status};retry_after=2"),
            )
        assert caught.value.status_code == status
        body: Any = caught.value.body
        assert body == {"error": {"code": code, "message": body["error"]["message"]}}
        assert caught.value.response.headers["retry-after"] == "2"

    def test_server_timeout_bounds_the_queue(self, emu: RunningEmulator) -> None:
        """X-Server-Timeout shorter than the queue: 504 deadline_exceeded."""
        response = httpx2.post(
            f"{emu.base_url}/v1/interactions",
            json={"model": MODEL, "input": "hi", "service_tier": "flex"},
            headers={**steer("flex_queue=3"), "x-server-timeout": "0.2"},
        )
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "deadline_exceeded"

    def test_a_request_without_input_is_a_400(self, gemini: genai.Client) -> None:
        """Neither input nor a previous interaction: invalid_request, naming the field."""
        with pytest.raises(errors.BadRequestError) as caught:
            gemini.interactions.create(model=MODEL)
        assert "'input'" in str(caught.value)

    def test_a_broken_stream_is_no_clean_end(self, emu: RunningEmulator) -> None:
        """break_after drops the connection after N deltas, before interaction.completed."""
        body = {"model": MODEL, "input": "hi", "stream": True}
        received = bytearray()
        url = f"{emu.base_url}/v1/interactions"
        with httpx2.stream("POST", url, json=body, headers=steer("break_after=2")) as response:
            assert response.status_code == 200

            def drain() -> None:
                for chunk in response.iter_bytes():
                    received.extend(chunk)

            with pytest.raises(httpx2.RemoteProtocolError):
                drain()
        assert received.count(b'"step.delta"') == 2
        assert b"interaction.completed" not in received
        assert json.loads(emu.log()[0]["raw_body"]) == body
