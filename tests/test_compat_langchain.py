"""LangChain's chat models through the proxy, each pointed at it the way its docs say:
``ChatOpenAI(base_url=…/v1)``, ``ChatAnthropic(base_url=…)``,
``ChatGoogleGenerativeAI(base_url=…)``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.exceptions import ModelAPIError, ModelError
from langchain_core.messages import AIMessage
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from flexroute.testing import RunningEmulator
from tests.compat import (
    ANSWER,
    CLAUDE_MODEL,
    FAILING,
    GEMINI_MODEL,
    OPENAI_MODEL,
    START_WITHIN,
    WEATHER,
    Weather,
    assert_flex,
    assert_passthrough,
    attempts,
    only_record,
    records,
)
from tests.conftest import Proxy


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LangSmith tracing, and no real key anywhere in reach."""
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def text(message: Any) -> str:
    assert isinstance(message, AIMessage)
    return str(message.content) if isinstance(message.content, str) else message.text


class TestChatOpenAI:
    @pytest.fixture
    def model(self, proxy: Proxy) -> Callable[..., ChatOpenAI]:
        def make(**options: Any) -> ChatOpenAI:
            options.setdefault("max_retries", 0)
            options.setdefault("include_response_headers", True)
            return ChatOpenAI(
                model=OPENAI_MODEL,
                api_key=SecretStr("sk-test-client"),
                base_url=f"{proxy.url}/v1",
                **options,
            )

        return make

    def test_plain_call(
        self, model: Callable[..., ChatOpenAI], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """``invoke`` answers as it would directly; the ledger records a passthrough."""
        message = model().invoke("hello")
        assert text(message) == ANSWER
        rec = only_record(proxy, emulator)
        assert message.response_metadata["headers"]["x-flexroute-request-id"] == rec["request_id"]
        assert_passthrough(rec, "standard")

    @pytest.mark.parametrize("method", ["json_schema", "function_calling"])
    def test_structured_output(
        self,
        model: Callable[..., ChatOpenAI],
        proxy: Proxy,
        emulator: RunningEmulator,
        method: Any,
    ) -> None:
        """``with_structured_output`` (JSON schema or a forced tool) returns the model."""
        assert model().with_structured_output(Weather, method=method).invoke("w") == WEATHER
        assert_passthrough(only_record(proxy, emulator), "standard")

    def test_streaming(
        self, model: Callable[..., ChatOpenAI], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """``stream`` yields the answer in pieces; the ledger records the stream."""
        pieces = [text(chunk) for chunk in model(stream_usage=True).stream("hello")]
        assert "".join(pieces) == ANSWER
        rec = only_record(proxy, emulator)
        assert_passthrough(rec, "standard")
        assert rec["usage"]["output_tokens"] == 8

    def test_flex_with_extra_body(
        self, model: Callable[..., ChatOpenAI], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """``extra_body={"start_within": …}`` routes flex; the answer and fee arrive."""
        message = model(extra_body={"start_within": START_WITHIN}).invoke("hello")
        assert text(message) == ANSWER
        assert message.response_metadata["headers"]["x-flexroute-route"] == "flex"
        assert message.response_metadata["service_tier"] == "flex"
        assert_flex(only_record(proxy, emulator))

    # langchain-openai's own serializer warns about its parsed field while streaming
    @pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
    def test_flex_structured_output_streamed(
        self, model: Callable[..., ChatOpenAI], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """The header form of ``start_within`` works on a streamed structured output too."""
        chat = model(
            default_headers={"x-flex-start-within": START_WITHIN}, include_response_headers=False
        )
        parsed = list(chat.with_structured_output(Weather).stream("w"))
        assert parsed[-1] == WEATHER
        assert_flex(only_record(proxy, emulator))

    def test_retries_as_directly(
        self, model: Callable[..., ChatOpenAI], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """A retryable 503 is retried exactly as often as against the provider itself."""
        headers = {"x-emulator": FAILING}
        direct = ChatOpenAI(
            model=OPENAI_MODEL,
            api_key=SecretStr("sk-test-client"),
            base_url=f"{emulator.base_url}/v1",
            max_retries=2,
            default_headers=headers,
        )
        baseline = attempts(emulator, lambda: direct.invoke("hello"), ModelAPIError)
        assert baseline == 3
        before = len(emulator.log())
        proxied = model(max_retries=2, default_headers=headers)
        assert attempts(emulator, lambda: proxied.invoke("hello"), ModelAPIError) == baseline
        assert [r["http_status"] for r in records(proxy, emulator, before)] == [503] * baseline

    def test_flex_stream_usage_matches_the_provider(
        self, model: Callable[..., ChatOpenAI], emulator: RunningEmulator
    ) -> None:
        """A streamed flex answer through the proxy carries the usage a direct flex call does."""
        headers = {"x-emulator": "prompt_tokens=100;cached_tokens=20;reasoning_tokens=5"}
        direct = ChatOpenAI(
            model=OPENAI_MODEL,
            api_key=SecretStr("sk-test-client"),
            base_url=f"{emulator.base_url}/v1",
            service_tier="flex",
            stream_usage=True,
            default_headers=headers,
        )
        proxied = model(
            stream_usage=True, default_headers=headers, extra_body={"start_within": START_WITHIN}
        )
        expected, got = (sum_chunks(chat.stream("hello")) for chat in (direct, proxied))
        assert got.content == expected.content == ANSWER
        assert got.usage_metadata == expected.usage_metadata
        assert got.response_metadata["service_tier"] == "flex"

    def test_retry_after_is_honoured_as_directly(
        self, model: Callable[..., ChatOpenAI], emulator: RunningEmulator
    ) -> None:
        """A 429's Retry-After reaches the client, which waits it out before its retry."""
        headers = {"x-emulator": "status=429;retry_after=0.8"}
        direct = ChatOpenAI(
            model=OPENAI_MODEL,
            api_key=SecretStr("sk-test-client"),
            base_url=f"{emulator.base_url}/v1",
            max_retries=1,
            default_headers=headers,
        )
        proxied = model(max_retries=1, default_headers=headers)
        for chat in (direct, proxied):
            before = len(emulator.log())
            started = time.monotonic()
            with pytest.raises(ModelError):
                chat.invoke("hello")
            assert time.monotonic() - started >= 0.75  # the SDK's own backoff is under 0.5s
            assert len(emulator.log()) - before == 2

    def test_timeout_shorter_than_start_within_gets_an_answer_on_retry(
        self, model: Callable[..., ChatOpenAI], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """The SDK's retry after its own timeout goes to standard (``sdk-retry``) and answers;
        the abandoned flex wait is recorded as the client closing, without a fee."""
        chat = model(
            max_retries=1,
            timeout=0.5,
            extra_body={"start_within": START_WITHIN},
            default_headers={"x-emulator": "flex_queue=3"},
        )
        assert text(chat.invoke("hello")) == ANSWER
        first, retry = records(proxy, emulator)
        assert (first["route"], first["status"], first["fee_usd"]) == (
            "flex",
            "client_closed",
            "0.000000000",
        )
        assert (retry["route"], retry["reason"], retry["status"]) == (
            "passthrough",
            "sdk-retry",
            "ok",
        )


def sum_chunks(chunks: Iterator[Any]) -> Any:
    total = None
    for chunk in chunks:
        total = chunk if total is None else total + chunk
    return total


class TestChatAnthropic:
    @pytest.fixture
    def model(self, proxy: Proxy) -> Callable[..., ChatAnthropic]:
        def make(**options: Any) -> ChatAnthropic:
            options.setdefault("max_retries", 0)
            return ChatAnthropic(
                model_name=CLAUDE_MODEL,
                api_key=SecretStr("sk-ant-test-client"),
                base_url=proxy.url,
                max_tokens=64,  # type: ignore[call-arg]  # the stubs know only its alias
                timeout=10,
                stop=None,
                **options,
            )

        return make

    def test_plain_call_and_stream(
        self, model: Callable[..., ChatAnthropic], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """``invoke`` and ``stream`` answer as directly; each leaves a passthrough record."""
        chat = model()
        assert text(chat.invoke("hello")) == ANSWER
        assert "".join(text(chunk) for chunk in chat.stream("hello")) == ANSWER
        recs = records(proxy, emulator)
        assert len(recs) == 2
        for rec in recs:
            assert_passthrough(rec, "standard")

    def test_structured_output(
        self, model: Callable[..., ChatAnthropic], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """``with_structured_output`` (a forced tool) returns the model."""
        assert model().with_structured_output(Weather).invoke("w") == WEATHER
        assert_passthrough(only_record(proxy, emulator), "standard")

    def test_start_within_header_is_passed_through_for_claude(
        self, model: Callable[..., ChatAnthropic], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """Claude has no flex tier: the call is forwarded with the header removed."""
        chat = model(default_headers={"x-flex-start-within": START_WITHIN})
        assert text(chat.invoke("hello")) == ANSWER
        rec = only_record(proxy, emulator)
        assert_passthrough(rec, "standard")
        assert rec["reason"] == "anthropic-proxy-only"
        [seen] = emulator.log()
        assert "x-flex-start-within" not in seen["headers"]

    def test_retries_as_directly(
        self, model: Callable[..., ChatAnthropic], proxy: Proxy, emulator: RunningEmulator
    ) -> None:
        """A retryable 503 is retried exactly as often as against Anthropic itself."""
        headers = {"x-emulator": FAILING}
        direct = ChatAnthropic(
            model_name=CLAUDE_MODEL,
            api_key=SecretStr("sk-ant-test-client"),
            base_url=emulator.base_url,
            max_tokens=64,  # type: ignore[call-arg]  # the stubs know only its alias
            max_retries=2,
            default_headers=headers,
            timeout=10,
            stop=None,
        )
        baseline = attempts(emulator, lambda: direct.invoke("hello"), Exception)
        assert baseline == 3
        proxied = model(max_retries=2, default_headers=headers)
        assert attempts(emulator, lambda: proxied.invoke("hello"), Exception) == baseline


class TestChatGoogleGenerativeAI:
    @pytest.fixture
    def model(self, proxy: Proxy) -> Callable[..., ChatGoogleGenerativeAI]:
        def make(**options: Any) -> ChatGoogleGenerativeAI:
            options.setdefault("max_retries", 1)
            return ChatGoogleGenerativeAI(
                model=GEMINI_MODEL,
                google_api_key="gemini-test-client",
                base_url=proxy.url,
                **options,
            )

        return make

    def test_plain_call_and_stream(
        self,
        model: Callable[..., ChatGoogleGenerativeAI],
        proxy: Proxy,
        emulator: RunningEmulator,
    ) -> None:
        """``invoke`` and ``stream`` answer as directly; each leaves a passthrough record."""
        chat = model()
        assert text(chat.invoke("hello")) == ANSWER
        assert "".join(text(chunk) for chunk in chat.stream("hello")) == ANSWER
        recs = records(proxy, emulator)
        assert len(recs) == 2
        for rec in recs:
            assert_passthrough(rec, "standard")

    def test_structured_output(
        self,
        model: Callable[..., ChatGoogleGenerativeAI],
        proxy: Proxy,
        emulator: RunningEmulator,
    ) -> None:
        """``with_structured_output`` (``responseJsonSchema``) returns the model."""
        assert model().with_structured_output(Weather).invoke("w") == WEATHER
        assert_passthrough(only_record(proxy, emulator), "standard")

    def test_flex_with_additional_headers(
        self,
        model: Callable[..., ChatGoogleGenerativeAI],
        proxy: Proxy,
        emulator: RunningEmulator,
    ) -> None:
        """``additional_headers={"x-flex-start-within": …}`` routes flex, streamed or not."""
        chat = model(additional_headers={"x-flex-start-within": START_WITHIN})
        assert chat.with_structured_output(Weather).invoke("w") == WEATHER
        assert "".join(text(chunk) for chunk in chat.stream("hello")) == ANSWER
        recs = records(proxy, emulator)
        assert len(recs) == 2
        for rec in recs:
            assert_flex(rec)

    def test_retries_as_directly(
        self,
        model: Callable[..., ChatGoogleGenerativeAI],
        proxy: Proxy,
        emulator: RunningEmulator,
    ) -> None:
        """A retryable 503 is retried exactly as often as against Google itself."""
        headers = {"x-emulator": FAILING}
        direct = ChatGoogleGenerativeAI(
            model=GEMINI_MODEL,
            google_api_key="gemini-test-client",
            base_url=emulator.base_url,
            max_retries=2,
            additional_headers=headers,
        )
        baseline = attempts(emulator, lambda: direct.invoke("hello"), ModelAPIError)
        assert baseline == 2
        proxied = model(max_retries=2, additional_headers=headers)
        assert attempts(emulator, lambda: proxied.invoke("hello"), ModelAPIError) == baseline
