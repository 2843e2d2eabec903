"""LiteLLM's SDK through the proxy, with ``api_base`` set as its docs say for each provider:
``openai/<model>`` at ``…/v1``, ``anthropic/<model>`` at the root, ``gemini/<model>`` at
``…/v1beta``. LiteLLM speaks Anthropic and Gemini with its own HTTP code, not their SDKs."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from flexroute.testing import RunningEmulator
from tests.compat import (
    ANSWER,
    FAILING,
    LITELLM_PROVIDERS,
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
from tests.offline_litellm import litellm

# litellm's own TypedDicts make pydantic warn when it first builds their schemas
pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real key anywhere in reach."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def complete(base_url: str, provider: str, **options: Any) -> Any:
    model, path = LITELLM_PROVIDERS[provider]
    return litellm.completion(
        model=model,
        messages=MESSAGES,
        api_base=f"{base_url}{path}",
        api_key="test-client-key",
        max_tokens=64,
        **options,
    )


def content(response: Any) -> str:
    return str(response.choices[0].message.content)


@pytest.mark.parametrize("provider", list(LITELLM_PROVIDERS))
class TestLiteLLM:
    def test_plain_call(self, proxy: Proxy, emulator: RunningEmulator, provider: str) -> None:
        """``completion`` answers as directly; the ledger records a passthrough."""
        assert content(complete(proxy.url, provider)) == ANSWER
        assert_passthrough(only_record(proxy, emulator), "standard")

    def test_structured_output(
        self, proxy: Proxy, emulator: RunningEmulator, provider: str
    ) -> None:
        """``response_format=<pydantic model>`` answers JSON that parses into it."""
        response = complete(proxy.url, provider, response_format=Weather)
        assert Weather.model_validate_json(content(response)) == WEATHER
        assert_passthrough(only_record(proxy, emulator), "standard")

    def test_streaming(self, proxy: Proxy, emulator: RunningEmulator, provider: str) -> None:
        """``stream=True`` yields the answer in pieces; the ledger records the stream."""
        chunks = complete(proxy.url, provider, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER
        assert_passthrough(only_record(proxy, emulator), "standard")

    def test_start_within(self, proxy: Proxy, emulator: RunningEmulator, provider: str) -> None:
        """``extra_body``/``extra_headers`` carry ``start_within``: OpenAI and Gemini go
        flex, streamed or not; Claude is passed through."""
        if provider == "openai":
            flex: dict[str, Any] = {"extra_body": {"start_within": START_WITHIN}}
        else:
            flex = {"extra_headers": {"x-flex-start-within": START_WITHIN}}
        whole = complete(proxy.url, provider, response_format=Weather, **flex)
        assert Weather.model_validate_json(content(whole)) == WEATHER
        streamed = complete(proxy.url, provider, stream=True, **flex)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == ANSWER
        recs = records(proxy, emulator)
        assert len(recs) == 2
        for rec in recs:
            if provider == "anthropic":
                assert_passthrough(rec, "standard")
                assert rec["reason"] == "anthropic-proxy-only"
            else:
                assert_flex(rec)

    def test_retries_as_directly(
        self, proxy: Proxy, emulator: RunningEmulator, provider: str
    ) -> None:
        """A retryable 503 is retried exactly as often as against the provider itself
        (OpenAI: the openai client's own retries; the others: ``num_retries``)."""
        options: dict[str, Any] = {"extra_headers": {"x-emulator": FAILING}}
        if provider != "openai":
            options["num_retries"] = 2
        error = openai.APIError  # every litellm exception derives from it
        baseline = attempts(
            emulator, lambda: complete(emulator.base_url, provider, **options), error
        )
        assert baseline == 3
        before = len(emulator.log())
        assert (
            attempts(emulator, lambda: complete(proxy.url, provider, **options), error) == baseline
        )
        assert len(records(proxy, emulator, before)) == baseline
