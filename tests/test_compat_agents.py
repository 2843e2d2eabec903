"""Agent frameworks through the proxy, each given an ``AsyncOpenAI(base_url=…/v1)`` client as
their docs show: pydantic-ai (``OpenAIProvider(openai_client=…)``) and the OpenAI Agents SDK
(``OpenAIResponsesModel``/``OpenAIChatCompletionsModel(openai_client=…)``, tracing off)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    set_tracing_disabled,
)
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai import NativeOutput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.openai import OpenAIResponsesModel as PydanticResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from flexroute.testing import RunningEmulator
from tests.compat import (
    ANSWER,
    FAILING,
    OPENAI_MODEL,
    START_WITHIN,
    WEATHER,
    Weather,
    assert_flex,
    assert_passthrough,
    attempts_async,
    only_record,
    records,
)
from tests.conftest import Proxy

pytestmark = pytest.mark.anyio
FLEX_BODY = {"start_within": START_WITHIN}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracing export, no logfire, and no real key anywhere in reach."""
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    monkeypatch.setenv("LOGFIRE_IGNORE_NO_CONFIG", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    set_tracing_disabled(True)


Client = Callable[..., openai.AsyncOpenAI]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """Makes ``AsyncOpenAI`` clients, closed at the end on the test's own event loop."""
    made: list[openai.AsyncOpenAI] = []

    def make(base_url: str, *, retries: int = 0, **headers: str) -> openai.AsyncOpenAI:
        made.append(
            openai.AsyncOpenAI(
                api_key="sk-test-client",
                base_url=base_url,
                max_retries=retries,
                default_headers=headers,
            )
        )
        return made[-1]

    yield make
    for each in made:
        await each.close()


class TestPydanticAI:
    @pytest.fixture
    def agent(self, proxy: Proxy, client: Client) -> Callable[..., PydanticAgent[None, Any]]:
        def make(output: Any = str, *, responses: bool = False) -> PydanticAgent[None, Any]:
            provider = OpenAIProvider(openai_client=client(f"{proxy.url}/v1"))
            kind = PydanticResponsesModel if responses else OpenAIChatModel
            return PydanticAgent(kind(OPENAI_MODEL, provider=provider), output_type=output)

        return make

    async def test_plain_call(
        self, agent: Callable[..., PydanticAgent[None, Any]], proxy: Proxy, emulator: Any
    ) -> None:
        """``Agent.run`` answers as directly; the ledger records a passthrough."""
        result = await agent().run("hello")
        assert result.output == ANSWER
        assert_passthrough(only_record(proxy, emulator), "standard")

    @pytest.mark.parametrize("output", [Weather, NativeOutput(Weather)], ids=["tool", "native"])
    async def test_structured_output(
        self,
        agent: Callable[..., PydanticAgent[None, Any]],
        proxy: Proxy,
        emulator: Any,
        output: Any,
    ) -> None:
        """A structured output type (its output tool, or native JSON schema) is returned."""
        result = await agent(output).run("weather")
        assert result.output == WEATHER
        assert_passthrough(only_record(proxy, emulator), "standard")

    async def test_streaming(
        self, agent: Callable[..., PydanticAgent[None, Any]], proxy: Proxy, emulator: Any
    ) -> None:
        """``run_stream`` streams the answer; the ledger records the stream."""
        async with agent().run_stream("hello") as run:
            pieces = [delta async for delta in run.stream_text(delta=True)]
        assert "".join(pieces) == ANSWER
        assert_passthrough(only_record(proxy, emulator), "standard")

    @pytest.mark.parametrize("responses", [False, True], ids=["chat", "responses"])
    async def test_flex_with_extra_body(
        self,
        agent: Callable[..., PydanticAgent[None, Any]],
        proxy: Proxy,
        emulator: Any,
        responses: bool,
    ) -> None:
        """``model_settings={"extra_body": …}`` routes flex; the structured answer arrives."""
        settings: Any = {"extra_body": FLEX_BODY}
        result = await agent(Weather, responses=responses).run("w", model_settings=settings)
        assert result.output == WEATHER
        assert_flex(only_record(proxy, emulator))

    async def test_flex_service_tier_setting_with_a_budget(
        self, agent: Callable[..., PydanticAgent[None, Any]], proxy: Proxy, emulator: Any
    ) -> None:
        """pydantic-ai's own ``openai_service_tier: "flex"`` plus a budget is flex-routed."""
        settings: Any = {"openai_service_tier": "flex", "extra_body": FLEX_BODY}
        result = await agent().run("hello", model_settings=settings)
        assert result.output == ANSWER
        rec = only_record(proxy, emulator)
        assert_flex(rec)
        assert rec["tier_requested"] == "flex"

    async def test_flex_streamed_structured_output(
        self, agent: Callable[..., PydanticAgent[None, Any]], proxy: Proxy, emulator: Any
    ) -> None:
        """A streamed structured output through flex ends in the model."""
        settings: Any = {"extra_body": FLEX_BODY}
        async with agent(Weather).run_stream("w", model_settings=settings) as run:
            output = await run.get_output()
        assert output == WEATHER
        assert_flex(only_record(proxy, emulator))

    async def test_retries_as_directly(
        self, proxy: Proxy, emulator: RunningEmulator, client: Client
    ) -> None:
        """A retryable 503 is retried exactly as often as against OpenAI itself."""

        def run(base_url: str) -> Callable[[], Any]:
            openai_client = client(base_url, retries=2, **{"x-emulator": FAILING})
            model = OpenAIChatModel(
                OPENAI_MODEL, provider=OpenAIProvider(openai_client=openai_client)
            )
            return lambda: PydanticAgent(model).run("hello")

        error = Exception  # pydantic-ai's ModelHTTPError, whatever it wraps
        baseline = await attempts_async(emulator, run(f"{emulator.base_url}/v1"), error)
        assert baseline == 3
        before = len(emulator.log())
        assert await attempts_async(emulator, run(f"{proxy.url}/v1"), error) == baseline
        assert len(records(proxy, emulator, before)) == baseline


class TestOpenAIAgents:
    @pytest.fixture
    def agent(self, proxy: Proxy, client: Client) -> Callable[..., Agent[Any]]:
        def make(output: Any = None, *, chat: bool = False, **settings: Any) -> Agent[Any]:
            openai_client = client(f"{proxy.url}/v1")
            kind = OpenAIChatCompletionsModel if chat else OpenAIResponsesModel
            return Agent(
                name="assistant",
                instructions="Answer briefly.",
                model=kind(OPENAI_MODEL, openai_client=openai_client),
                output_type=output,
                model_settings=ModelSettings(**settings),
            )

        return make

    async def test_plain_call(
        self, agent: Callable[..., Agent[Any]], proxy: Proxy, emulator: Any
    ) -> None:
        """``Runner.run`` answers as directly (Responses API); the ledger records it."""
        result = await Runner.run(agent(), "hello")
        assert result.final_output == ANSWER
        rec = only_record(proxy, emulator)
        assert rec["endpoint"] == "/v1/responses"
        assert_passthrough(rec, "standard")

    @pytest.mark.parametrize("chat", [False, True], ids=["responses", "chat"])
    async def test_structured_output(
        self, agent: Callable[..., Agent[Any]], proxy: Proxy, emulator: Any, chat: bool
    ) -> None:
        """An ``output_type`` (a JSON schema format) comes back as the model."""
        result = await Runner.run(agent(Weather, chat=chat), "weather")
        assert result.final_output == WEATHER
        assert_passthrough(only_record(proxy, emulator), "standard")

    async def test_streaming(
        self, agent: Callable[..., Agent[Any]], proxy: Proxy, emulator: Any
    ) -> None:
        """``Runner.run_streamed`` streams the answer; the ledger records the stream."""
        run = Runner.run_streamed(agent(), "hello")
        kinds = [event.type async for event in run.stream_events()]
        assert "raw_response_event" in kinds
        assert run.final_output == ANSWER
        assert_passthrough(only_record(proxy, emulator), "standard")

    @pytest.mark.parametrize("chat", [False, True], ids=["responses", "chat"])
    @pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
    async def test_flex_with_extra_body(
        self,
        agent: Callable[..., Agent[Any]],
        proxy: Proxy,
        emulator: Any,
        chat: bool,
        stream: bool,
    ) -> None:
        """``ModelSettings(extra_body=…)`` routes flex; the structured answer arrives."""
        flex_agent = agent(Weather, chat=chat, extra_body=FLEX_BODY)
        if stream:
            run = Runner.run_streamed(flex_agent, "weather")
            async for _ in run.stream_events():
                pass
            output = run.final_output
        else:
            output = (await Runner.run(flex_agent, "weather")).final_output
        assert output == WEATHER
        assert_flex(only_record(proxy, emulator))

    async def test_retries_as_directly(
        self, proxy: Proxy, emulator: RunningEmulator, client: Client
    ) -> None:
        """A retryable 503 is retried exactly as often as against OpenAI itself."""

        def run(base_url: str) -> Callable[[], Any]:
            openai_client = client(base_url, retries=2, **{"x-emulator": FAILING})
            model = OpenAIResponsesModel(OPENAI_MODEL, openai_client=openai_client)
            return lambda: Runner.run(Agent(name="assistant", model=model), "hello")

        error = openai.InternalServerError
        baseline = await attempts_async(emulator, run(f"{emulator.base_url}/v1"), error)
        assert baseline == 3
        before = len(emulator.log())
        assert await attempts_async(emulator, run(f"{proxy.url}/v1"), error) == baseline
        assert len(records(proxy, emulator, before)) == baseline
