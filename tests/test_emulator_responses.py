"""The emulator's OpenAI Responses API and async client, driven by the real ``openai`` SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
import openai
import pytest

from flexroute.testing import RunningEmulator

MESSAGES: Any = [{"role": "user", "content": "Say something about flex capacity."}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def controls(value: str) -> dict[str, Any]:
    return {"extra_headers": {"x-emulator": value}}


class TestResponses:
    def test_non_stream_response(self, client: openai.OpenAI) -> None:
        """A Responses call returns a completed response with usage and the tier served."""
        response = client.responses.create(
            model="gpt-5",
            input="hello",
            service_tier="flex",
            **controls("prompt_tokens=50;cached_tokens=10;reasoning_tokens=4;tokens=2"),
        )
        assert response.status == "completed"
        assert response.service_tier == "flex"
        assert response.output_text == "Flex capacity."
        assert response.usage is not None
        assert response.usage.input_tokens == 50
        assert response.usage.input_tokens_details.cached_tokens == 10
        assert response.usage.output_tokens == 6
        assert response.usage.output_tokens_details.reasoning_tokens == 4

    def test_stream_events_in_order(self, client: openai.OpenAI) -> None:
        """The stream has OpenAI's event sequence, numbered, ending in response.completed."""
        events = list(
            client.responses.create(model="gpt-5", input="hi", stream=True, **controls("tokens=2"))
        )
        assert [e.type for e in events] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        final = events[-1]
        assert final.type == "response.completed"
        assert final.response.service_tier == "default"
        assert final.response.usage is not None

    def test_stream_helper_assembles_the_text(self, client: openai.OpenAI) -> None:
        """The SDK's ``responses.stream`` helper accepts the events and builds the response."""
        with client.responses.stream(
            model="gpt-5", input="hi", service_tier="priority", **controls("tokens=3")
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_response()
        assert final.output_text == "Flex capacity is."
        assert final.service_tier == "priority"

    def test_stream_tool_call_and_refusal(self, client: openai.OpenAI) -> None:
        """Tool calls and refusals stream as their own event types."""
        with client.responses.stream(
            model="gpt-5", input="hi", **controls("tool_call=1;tokens=2")
        ) as stream:
            types = [event.type for event in stream]
            call = stream.get_final_response().output[0]
        assert "response.function_call_arguments.delta" in types
        assert call.type == "function_call"
        assert json.loads(call.arguments)
        refusal = list(
            client.responses.create(model="gpt-5", input="hi", stream=True, **controls("refusal=1"))
        )
        assert "response.refusal.done" in [event.type for event in refusal]

    def test_responses_stream_waits_after_in_progress(self, emu: RunningEmulator) -> None:
        """created and in_progress go out at once; output events wait for the queue."""
        body = {"model": "gpt-5", "input": "hi", "stream": True, "service_tier": "flex"}
        started = time.monotonic()
        arrivals: list[tuple[str, float]] = []
        with httpx2.stream(
            "POST",
            f"{emu.base_url}/v1/responses",
            json=body,
            headers={"x-emulator": "flex_queue=0.3;tokens=1"},
        ) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    arrivals.append((line[len("event: ") :], time.monotonic() - started))
        times = dict(arrivals)
        assert times["response.in_progress"] < 0.25
        assert times["response.output_item.added"] >= 0.28


class TestAsyncClient:
    @pytest.mark.anyio
    async def test_async_chat_and_responses(self, emu: RunningEmulator) -> None:
        """The async client streams chat and reads responses from the emulator."""
        emu.reset()
        async with openai.AsyncOpenAI(
            api_key="sk-async", base_url=f"{emu.base_url}/v1", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="gpt-5",
                messages=MESSAGES,
                stream=True,
                service_tier="flex",
                **controls("flex_queue=0.05;tokens=2"),
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            response = await client.responses.create(model="gpt-5", input="hi")
        assert text == "Flex capacity."
        assert response.output_text
