"""The emulator's Gemini and Anthropic faces, driven by ``google-genai`` and ``anthropic``."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx2
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from flexroute.testing import RunningEmulator

CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-2.5-flash"
MESSAGES: Any = [{"role": "user", "content": "Say something about flex capacity."}]


@pytest.fixture
def gemini(emu: RunningEmulator) -> genai.Client:
    emu.reset()
    return genai.Client(
        api_key="gemini-test-key", http_options=types.HttpOptions(base_url=emu.base_url)
    )


@pytest.fixture
def claude(emu: RunningEmulator) -> anthropic.Anthropic:
    emu.reset()
    return anthropic.Anthropic(api_key="claude-test-key", base_url=emu.base_url, max_retries=0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(controls: str = "", **fields: Any) -> types.GenerateContentConfig:
    """A generate-content config carrying the ``x-emulator`` header."""
    options = types.HttpOptions(headers={"x-emulator": controls}) if controls else None
    return types.GenerateContentConfig(http_options=options, **fields)


class TestGemini:
    @pytest.mark.parametrize(
        ("tier", "served"),
        [("flex", "flex"), (None, "standard"), ("standard", "standard"), ("priority", "priority")],
    )
    def test_tier_served_in_header(self, gemini: genai.Client, tier: Any, served: str) -> None:
        """The SDK's ``service_tier`` is honoured and the served tier comes back in a header."""
        response = gemini.models.generate_content(
            model=GEMINI, contents="hello", config=config(service_tier=tier)
        )
        assert response.text == "Flex capacity is cheaper when the queue is."
        assert response.sdk_http_response is not None
        assert response.sdk_http_response.headers is not None
        assert response.sdk_http_response.headers["x-gemini-service-tier"] == served

    def test_rest_snake_case_uppercase_tier(self, emu: RunningEmulator) -> None:
        """The REST form ``"service_tier": "FLEX"`` under /v1beta is read as flex."""
        emu.reset()
        response = httpx2.post(
            f"{emu.base_url}/v1beta/models/{GEMINI}:generateContent",
            json={"contents": [{"parts": [{"text": "hi"}]}], "service_tier": "FLEX"},
        )
        assert response.headers["x-gemini-service-tier"] == "flex"
        assert emu.log()[0]["tier_requested"] == "FLEX"
        assert emu.log()[0]["model"] == GEMINI

    def test_usage_metadata(self, gemini: genai.Client) -> None:
        """Prompt, cached, candidate and thinking counts follow the controls."""
        response = gemini.models.generate_content(
            model=GEMINI,
            contents="hi",
            config=config("prompt_tokens=100;cached_tokens=40;reasoning_tokens=7;tokens=3"),
        )
        usage = response.usage_metadata
        assert usage is not None
        assert (usage.prompt_token_count, usage.cached_content_token_count) == (100, 40)
        assert (usage.candidates_token_count, usage.thoughts_token_count) == (3, 7)
        assert usage.total_token_count == 110

    def test_stream_usage_is_cumulative(self, gemini: genai.Client) -> None:
        """Stream chunks carry growing candidate counts; the last one finishes with STOP."""
        chunks = list(
            gemini.models.generate_content_stream(
                model=GEMINI, contents="hi", config=config("tokens=3", service_tier="flex")
            )
        )
        assert [chunk.text for chunk in chunks] == ["Flex ", "capacity ", "is."]
        counts = [c.usage_metadata.candidates_token_count for c in chunks if c.usage_metadata]
        assert counts == [1, 2, 3]
        assert chunks[-1].candidates is not None
        assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP

    def test_stream_wire_format(self, emu: RunningEmulator) -> None:
        """``?alt=sse`` streams ``data:`` events separated by CRLF CRLF, as Google sends them."""
        response = httpx2.post(
            f"{emu.base_url}/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse",
            json={"contents": "hi"},
            headers={"x-emulator": "tokens=2"},
        )
        events = response.text.split("\r\n\r\n")
        assert events[-1] == ""
        assert [
            json.loads(e[len("data: ") :])["usageMetadata"]["candidatesTokenCount"]
            for e in events[:-1]
        ] == [1, 2]
        assert response.headers["content-type"].startswith("text/event-stream")

    def test_flex_refusal_is_503_unavailable(self, gemini: genai.Client) -> None:
        """A refused flex request raises the SDK's ServerError with status UNAVAILABLE."""
        with pytest.raises(genai_errors.ServerError) as caught:
            gemini.models.generate_content(
                model=GEMINI, contents="hi", config=config("flex_refuse=1", service_tier="flex")
            )
        assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")

    def test_refuse_status_429_is_resource_exhausted(self, gemini: genai.Client) -> None:
        """``refuse_status=429`` refuses with RESOURCE_EXHAUSTED, a ClientError."""
        with pytest.raises(genai_errors.ClientError) as caught:
            gemini.models.generate_content(
                model=GEMINI,
                contents="hi",
                config=config("flex_refuse=always;refuse_status=429", service_tier="flex"),
            )
        assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")

    def test_server_timeout_ends_the_queue_with_504(self, emu: RunningEmulator) -> None:
        """``X-Server-Timeout`` shorter than the queue answers 504 DEADLINE_EXCEEDED on time."""
        emu.reset()
        started = time.monotonic()
        response = httpx2.post(
            f"{emu.base_url}/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse",
            json={"contents": "hi", "serviceTier": "flex"},
            headers={"x-emulator": "flex_queue=0.5", "x-server-timeout": "0.2"},
        )
        assert 0.2 <= time.monotonic() - started < 0.45
        assert response.status_code == 504
        assert response.json()["error"]["status"] == "DEADLINE_EXCEEDED"
        assert "x-gemini-service-tier" not in response.headers

    def test_function_call(self, gemini: genai.Client) -> None:
        """``tool_call=1`` answers with a functionCall part naming the declared function."""
        tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="lookup")])
        response = gemini.models.generate_content(
            model=GEMINI, contents="hi", config=config("tool_call=1", tools=[tool])
        )
        assert response.function_calls is not None
        assert response.function_calls[0].name == "lookup"
        assert response.function_calls[0].args == {"location": "Paris, France", "unit": "celsius"}

    def test_status_control(self, gemini: genai.Client) -> None:
        """``status=400`` answers INVALID_ARGUMENT in Google's error format."""
        with pytest.raises(genai_errors.ClientError) as caught:
            gemini.models.generate_content(model=GEMINI, contents="hi", config=config("status=400"))
        assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")

    def test_break_after_fails_the_stream(self, gemini: genai.Client) -> None:
        """A dropped stream makes the SDK's iteration raise."""
        seen: list[str | None] = []
        with pytest.raises(httpx2.HTTPError):
            seen.extend(
                chunk.text
                for chunk in gemini.models.generate_content_stream(
                    model=GEMINI, contents="hi", config=config("break_after=1")
                )
            )
        assert seen == ["Flex "]

    def test_key_is_logged_as_a_fingerprint(
        self, gemini: genai.Client, emu: RunningEmulator
    ) -> None:
        """The ``x-goog-api-key`` header is logged only as its fingerprint."""
        gemini.models.generate_content(model=GEMINI, contents="hi")
        assert emu.log()[0]["headers"]["x-goog-api-key"].startswith("sha256:")
        assert "gemini-test-key" not in json.dumps(emu.log())

    @pytest.mark.anyio
    async def test_async_stream(self, gemini: genai.Client) -> None:
        """The async client streams from the emulator too."""
        stream = await gemini.aio.models.generate_content_stream(
            model=GEMINI,
            contents="hi",
            config=config("tokens=2;flex_queue=0.05", service_tier="flex"),
        )
        assert [chunk.text async for chunk in stream] == ["Flex ", "capacity."]


class TestAnthropic:
    def test_message(self, claude: anthropic.Anthropic) -> None:
        """A message reports Anthropic's usage split and the standard service tier."""
        message = claude.messages.create(
            model=CLAUDE,
            max_tokens=64,
            messages=MESSAGES,
            extra_headers={"x-emulator": "prompt_tokens=100;cached_tokens=30;tokens=4"},
        )
        assert message.type == "message"
        assert message.stop_reason == "end_turn"
        assert message.content[0].type == "text"
        assert message.content[0].text == "Flex capacity is cheaper."
        usage = message.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens) == (70, 30)
        assert (usage.output_tokens, usage.service_tier) == (4, "standard")

    def test_serve_tier_priority(self, claude: anthropic.Anthropic) -> None:
        """``serve_tier=priority`` is reported in ``usage.service_tier``."""
        message = claude.messages.create(
            model=CLAUDE,
            max_tokens=64,
            messages=MESSAGES,
            service_tier="auto",
            extra_headers={"x-emulator": "serve_tier=priority"},
        )
        assert message.usage.service_tier == "priority"

    def test_stream_events(self, claude: anthropic.Anthropic) -> None:
        """The stream has Anthropic's event sequence and a final cumulative usage."""
        with claude.messages.stream(
            model=CLAUDE,
            max_tokens=64,
            messages=MESSAGES,
            extra_headers={"x-emulator": "tokens=2;standard_queue=0.05"},
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_message()
        assert kinds[:2] == ["message_start", "content_block_start"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert final.content[0].type == "text"
        assert final.content[0].text == "Flex capacity."
        assert final.usage.output_tokens == 2

    def test_stream_tool_use(self, claude: anthropic.Anthropic) -> None:
        """``tool_call=1`` streams a tool_use block as input_json deltas."""
        with claude.messages.stream(
            model=CLAUDE,
            max_tokens=64,
            messages=MESSAGES,
            tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
            extra_headers={"x-emulator": "tool_call=1;tokens=3"},
        ) as stream:
            final = stream.get_final_message()
        block = final.content[0]
        assert block.type == "tool_use"
        assert block.name == "lookup"
        assert block.input == {"location": "Paris, France", "unit": "celsius"}
        assert final.stop_reason == "tool_use"

    def test_overloaded_529(self, claude: anthropic.Anthropic) -> None:
        """``status=529`` raises the SDK's OverloadedError with overloaded_error."""
        with pytest.raises(anthropic.OverloadedError) as caught:
            claude.messages.create(
                model=CLAUDE,
                max_tokens=8,
                messages=MESSAGES,
                extra_headers={"x-emulator": "status=529"},
            )
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "overloaded_error"

    def test_rate_limited_429_with_retry_after(self, claude: anthropic.Anthropic) -> None:
        """``status=429;retry_after=`` raises RateLimitError with a retry-after header."""
        with pytest.raises(anthropic.RateLimitError) as caught:
            claude.messages.create(
                model=CLAUDE,
                max_tokens=8,
                messages=MESSAGES,
                extra_headers={"x-emulator": "status=429;retry_after=3"},
            )
        assert caught.value.response.headers["retry-after"] == "3"

    def test_any_version_and_missing_max_tokens(self, emu: RunningEmulator) -> None:
        """Any anthropic-version is accepted; a body without max_tokens is a 400."""
        url = f"{emu.base_url}/v1/messages"
        headers = {"anthropic-version": "1999-01-01", "x-api-key": "k"}
        good = httpx2.post(
            url, headers=headers, json={"model": CLAUDE, "max_tokens": 5, "messages": MESSAGES}
        )
        bad = httpx2.post(url, headers=headers, json={"model": CLAUDE, "messages": MESSAGES})
        assert good.status_code == 200
        assert bad.status_code == 400
        assert bad.json()["error"] == {
            "type": "invalid_request_error",
            "message": "max_tokens: Field required",
        }

    @pytest.mark.anyio
    async def test_async_client(self, emu: RunningEmulator) -> None:
        """The async client reads messages from the emulator."""
        async with anthropic.AsyncAnthropic(api_key="k", base_url=emu.base_url) as client:
            message = await client.messages.create(model=CLAUDE, max_tokens=8, messages=MESSAGES)
        assert message.usage.service_tier == "standard"
