"""The emulator's attempt log: timings, early closes, raw bodies, hashed keys."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import httpx2
import openai
import pytest

from flexroute.emulator import fingerprint
from flexroute.testing import RunningEmulator

MESSAGES: Any = [{"role": "user", "content": "Say something about flex capacity."}]


class TestAttemptLog:
    def test_record_fields(self, client: openai.OpenAI, emu: RunningEmulator) -> None:
        """A record keeps path, model, tier, stream flag, request id, timings and status."""
        client.chat.completions.create(
            model="gpt-5-mini",
            messages=MESSAGES,
            service_tier="flex",
            extra_headers={"x-client-request-id": "rid-1", "x-emulator": "flex_queue=0.1"},
        )
        (record,) = emu.log()
        assert record["seq"] == 1
        assert record["path"] == "/v1/chat/completions"
        assert record["model"] == "gpt-5-mini"
        assert record["tier_requested"] == "flex"
        assert record["tier_served"] == "flex"
        assert record["stream"] is False
        assert record["client_request_id"] == "rid-1"
        assert record["status"] == 200
        assert record["closed_early"] is False
        assert record["arrived_at"] + 0.1 <= record["first_output_at"] <= record["ended_at"]

    def test_raw_body_and_hashed_key(self, emu: RunningEmulator) -> None:
        """The raw body is kept byte for byte; the API key only as a fingerprint."""
        emu.reset()
        raw = b'{"model": "gpt-5",  "messages": [], "unknown_field": {"kept": true}}'
        httpx2.post(
            f"{emu.base_url}/v1/chat/completions",
            content=raw,
            headers={"authorization": "Bearer sk-secret-value"},
        )
        (record,) = emu.log()
        assert record["raw_body"] == raw.decode()
        assert record["headers"]["authorization"] == f"Bearer {fingerprint('sk-secret-value')}"
        assert "sk-secret-value" not in json.dumps(record)

    def test_closed_early_while_queued(self, emu: RunningEmulator) -> None:
        """A client that gives up during the queue is logged as closed early, at that moment."""
        emu.reset()
        body = {"model": "gpt-5", "messages": MESSAGES, "service_tier": "flex"}
        with pytest.raises(httpx2.ReadTimeout):
            httpx2.post(
                f"{emu.base_url}/v1/chat/completions",
                json=body,
                timeout=0.15,
                headers={"x-emulator": "flex_queue=0.5"},
            )
        record = _wait_for(emu, lambda r: r["ended_at"] is not None)
        assert record["closed_early"] is True
        assert record["first_output_at"] is None
        assert 0.1 <= record["ended_at"] - record["arrived_at"] < 0.45

    def test_closed_early_during_a_stream_queue(self, emu: RunningEmulator) -> None:
        """Closing a stream after its preamble, while flex queues, is logged as closed early."""
        emu.reset()
        body = {"model": "gpt-5", "messages": MESSAGES, "service_tier": "flex", "stream": True}
        with httpx2.stream(
            "POST",
            f"{emu.base_url}/v1/chat/completions",
            json=body,
            headers={"x-emulator": "flex_queue=0.5"},
        ) as response:
            next(response.iter_lines())
        record = _wait_for(emu, lambda r: r["ended_at"] is not None)
        assert record["closed_early"] is True
        assert record["ended_at"] - record["arrived_at"] < 0.45

    def test_log_and_reset_over_http(self, client: openai.OpenAI, emu: RunningEmulator) -> None:
        """``GET /_emulator/log`` lists records; ``POST /_emulator/reset`` clears them."""
        client.models.list()
        records = httpx2.get(f"{emu.base_url}/_emulator/log").json()
        assert [r["path"] for r in records] == ["/v1/models"]
        assert httpx2.post(f"{emu.base_url}/_emulator/reset").status_code == 200
        assert httpx2.get(f"{emu.base_url}/_emulator/log").json() == []

    def test_models_list(self, client: openai.OpenAI) -> None:
        """``GET /v1/models`` answers a small model list the SDK can page."""
        assert "gpt-5-mini" in [model.id for model in client.models.list()]


class TestEarlyCloseWithAiohttp:
    @pytest.mark.anyio
    async def test_aiohttp_timeout_during_a_stream_queue(self, emu: RunningEmulator) -> None:
        """An aiohttp client timing out while an Anthropic stream queues is logged at once."""
        emu.reset()
        body = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": MESSAGES, "stream": True}
        timeout = aiohttp.ClientTimeout(total=0.15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(TimeoutError):
                async with session.post(
                    f"{emu.base_url}/v1/messages",
                    json=body,
                    headers={"x-emulator": "standard_queue=0.5"},
                ) as response:
                    await response.read()
        record = _wait_for(emu, lambda r: r["ended_at"] is not None)
        assert record["closed_early"] is True
        assert record["status"] == 200
        assert record["first_output_at"] is None
        assert record["ended_at"] - record["arrived_at"] < 0.45

    def test_other_paths_are_logged_with_their_body(self, emu: RunningEmulator) -> None:
        """A path the emulator does not serve is still logged, body included, and gets a 404."""
        emu.reset()
        response = httpx2.post(f"{emu.base_url}/v1/embeddings", content=b'{"input":"x"}')
        assert response.status_code == 404
        (record,) = emu.log()
        assert (record["path"], record["raw_body"], record["status"]) == (
            "/v1/embeddings",
            '{"input":"x"}',
            404,
        )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _wait_for(emu: RunningEmulator, ready: Any, timeout: float = 2.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        records = emu.log()
        if records and ready(records[-1]):
            return records[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no finished record in {timeout}s: {records}")
        time.sleep(0.01)
