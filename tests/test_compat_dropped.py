"""A provider that drops the connection before answering: each client retries through the
proxy (which answers 502 ``upstream_unreachable`` with ``x-should-retry: true``) exactly as
often as it does against the provider itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.exceptions import ModelError
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.compat import CLAUDE_MODEL, LITELLM_PROVIDERS, OPENAI_MODEL, Dropper, proxy_to
from tests.offline_litellm import litellm

pytestmark = pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning")  # litellm's
Call = Callable[[str], object]  # one call at a base URL, retrying once


def chat_openai(base: str) -> object:
    model = ChatOpenAI(
        model=OPENAI_MODEL, api_key=SecretStr("sk-test"), base_url=f"{base}/v1", max_retries=1
    )
    return model.invoke("hello")


def chat_anthropic(base: str) -> object:
    model = ChatAnthropic(
        model_name=CLAUDE_MODEL,
        api_key=SecretStr("sk-ant-test"),
        base_url=base,
        max_retries=1,
        timeout=10,
        stop=None,
    )
    return model.invoke("hello")


def via_litellm(provider: str) -> Call:
    def call(base: str) -> object:
        model, path = LITELLM_PROVIDERS[provider]
        return litellm.completion(
            model=model,
            messages=[{"role": "user", "content": "hello"}],
            api_base=f"{base}{path}",
            api_key="test-key",
            max_tokens=16,
            num_retries=1,
        )

    return call


# client -> (its call, the error it ends with)
CLIENTS: dict[str, tuple[Call, Any]] = {
    "langchain-openai": (chat_openai, ModelError),
    "langchain-anthropic": (chat_anthropic, ModelError),
    "litellm-openai": (via_litellm("openai"), openai.APIError),
    "litellm-anthropic": (via_litellm("anthropic"), openai.APIError),
    "litellm-gemini": (via_litellm("gemini"), openai.APIError),
}


@pytest.fixture
def dropper() -> Iterator[Dropper]:
    host = Dropper()
    yield host
    host.close()


@pytest.mark.parametrize("name", list(CLIENTS))
def test_dropped_connection_is_retried_as_directly(
    name: str, dropper: Dropper, tmp_path: Path
) -> None:
    """The provider host saw as many requests through the proxy as from the client direct."""
    call, error = CLIENTS[name]
    with pytest.raises(error):
        call(dropper.url)
    baseline, dropper.requests = dropper.requests, 0
    assert baseline >= 1
    with proxy_to(tmp_path, dropper.url) as proxy, pytest.raises(error):
        call(proxy.url)
    assert dropper.requests == baseline
