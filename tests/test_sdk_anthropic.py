"""flexroute.wrap around the real anthropic SDK: always passthrough, cost recorded, no fee."""

from __future__ import annotations

import json
import threading
from typing import Any

import anthropic
import anyio
import anyio.to_thread
import pytest

from flexroute import Outcome, Settings, capture, wrap
from tests.conftest import threads_started_since

MODEL = "claude-haiku-4-5"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def bare(emulator: Any, **options: Any) -> anthropic.Anthropic:
    options.setdefault("max_retries", 0)
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=emulator.base_url, **options)


def bare_async(emulator: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-test", base_url=emulator.base_url, max_retries=0
    )


def assert_passthrough_with_cost(outcome: Outcome) -> None:
    assert (outcome.provider, outcome.route) == ("anthropic", "passthrough")
    assert outcome.reason == "anthropic-proxy-only"
    assert outcome.cost is not None
    assert outcome.cost > 0
    assert outcome.cost == outcome.standard_cost
    assert outcome.fee == outcome.saving == 0


class TestPassthrough:
    def test_sync_message_is_passed_through_with_cost(
        self, settings: Settings, emulator: Any
    ) -> None:
        """A budget on a Claude call is removed; one request goes out; cost recorded, fee 0."""
        with (
            wrap(bare(emulator), start_within="5s", settings=settings) as client,
            capture() as outcomes,
        ):
            raw = client.messages.with_raw_response.create(
                model=MODEL,
                max_tokens=64,
                messages=MESSAGES,
                extra_headers={"x-emulator": "prompt_tokens=500"},
            )
        assert raw.parse().content
        [outcome] = outcomes
        assert outcome.request_id == raw.headers["x-flexroute-request-id"]
        assert_passthrough_with_cost(outcome)
        [attempt] = emulator.log()
        assert "start_within" not in json.loads(attempt["raw_body"])

    def test_sync_stream_records_usage_at_the_end(self, settings: Settings, emulator: Any) -> None:
        """A streamed Claude answer arrives whole; its cost is in the outcome."""
        with (
            wrap(bare(emulator), start_within="5s", settings=settings) as client,
            capture() as outcomes,
            client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream,
        ):
            assert "".join(stream.text_stream)
        [outcome] = outcomes
        assert_passthrough_with_cost(outcome)
        assert outcome.usage is not None
        assert outcome.usage.output_tokens > 0

    def test_async_client_streaming_and_not(self, settings: Settings, emulator: Any) -> None:
        """The async client is passed through too, whole and streamed."""

        async def main() -> list[Outcome]:
            client = wrap(bare_async(emulator), start_within="5s", settings=settings)
            with capture() as outcomes:
                message = await client.messages.create(
                    model=MODEL, max_tokens=64, messages=MESSAGES
                )
                assert message.content
                stream = await client.messages.create(
                    model=MODEL, max_tokens=64, messages=MESSAGES, stream=True
                )
                assert [event.type async for event in stream][-1] == "message_stop"
            await client.close()
            return outcomes

        outcomes = anyio.run(main)
        assert len(outcomes) == 2
        for outcome in outcomes:
            assert_passthrough_with_cost(outcome)


class TestErrors:
    def test_errors_are_the_sdks_own_exceptions(self, settings: Settings, emulator: Any) -> None:
        """A bad start_within and a provider 529 raise anthropic's usual exception classes."""
        with wrap(bare(emulator), settings=settings) as client:
            with pytest.raises(anthropic.BadRequestError, match="soon"):
                client.messages.create(
                    model=MODEL,
                    max_tokens=8,
                    messages=MESSAGES,
                    extra_body={"start_within": "soon"},
                )
            with pytest.raises(anthropic.InternalServerError) as caught:
                client.messages.create(
                    model=MODEL,
                    max_tokens=8,
                    messages=MESSAGES,
                    extra_headers={"x-emulator": "status=529"},
                )
        assert caught.value.status_code == 529

    def test_other_anthropic_objects_are_refused(self) -> None:
        """A resource or an unrelated object is not a client: TypeError names what is."""
        client = anthropic.Anthropic(api_key="x")
        with pytest.raises(TypeError, match=r"anthropic\.Anthropic"):
            wrap(client.messages)


class TestOutcomesAndClients:
    def test_outcomes_are_right_under_50_concurrent_async_calls(
        self, settings: Settings, emulator: Any
    ) -> None:
        """50 tasks on one async client each capture exactly their own outcome."""
        heard: list[Outcome] = []

        async def main() -> list[tuple[str, list[Outcome]]]:
            client = wrap(bare_async(emulator), settings=settings, on_outcome=heard.append)
            results: list[tuple[str, list[Outcome]]] = []

            async def one(i: int) -> None:
                with capture() as mine:
                    raw = await client.messages.with_raw_response.create(
                        model=MODEL,
                        max_tokens=16,
                        messages=MESSAGES,
                        extra_headers={"x-emulator": f"tokens={1 + i % 5}"},
                    )
                results.append((raw.headers["x-flexroute-request-id"], mine))

            async with anyio.create_task_group() as group:
                for i in range(50):
                    group.start_soon(one, i)
            await client.close()
            return results

        results = anyio.run(main)
        assert len(results) == 50
        for request_id, mine in results:
            [outcome] = mine
            assert outcome.request_id == request_id
        assert sorted(o.request_id for o in heard) == sorted(r[0] for r in results)

    def test_same_type_and_no_threads_after_close(self, settings: Settings, emulator: Any) -> None:
        """wrap returns an Anthropic client; close() stops every thread it started."""
        before = set(threading.enumerate())
        original = bare(emulator, max_retries=4)
        client = wrap(original, settings=settings)
        assert type(client) is anthropic.Anthropic
        assert client.max_retries == 4
        client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
        assert "flexroute-sdk" in threads_started_since(before, timeout=0)
        client.close()
        assert threads_started_since(before) == set()

    def test_sync_client_works_from_a_running_loops_worker_thread(
        self, settings: Settings, emulator: Any
    ) -> None:
        """The sync wrapped client called from to_thread inside an event loop just works."""
        client = wrap(bare(emulator), settings=settings)

        def call() -> str:
            message = client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
            return message.content[0].type

        async def main() -> tuple[str, list[Outcome]]:
            with capture() as outcomes:
                kind = await anyio.to_thread.run_sync(call)
            return kind, outcomes

        kind, outcomes = anyio.run(main)
        client.close()
        assert kind == "text"
        [outcome] = outcomes
        assert outcome.route == "passthrough"
