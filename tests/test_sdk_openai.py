"""flexroute.wrap around the real openai SDK, against the emulator on loopback."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import openai
import pytest

import flexroute
from flexroute import ConfigError, Outcome, Settings, capture, wrap
from flexroute.ledger import LedgerRecord, open_store
from flexroute.transport import default_upstream
from flexroute.upstream import Httpx2Upstream
from tests.conftest import attempts, threads_started_since

MODEL = "gpt-5-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


def bare(emulator: Any, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(api_key="sk-test", base_url=f"{emulator.base_url}/v1", **options)


def bare_async(emulator: Any, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(api_key="sk-test", base_url=f"{emulator.base_url}/v1", **options)


@pytest.fixture
def client(settings: Settings, emulator: Any) -> Iterator[openai.OpenAI]:
    """A wrapped sync client with a 2 s default budget, closed after the test."""
    wrapped = wrap(bare(emulator), start_within="2s", settings=settings)
    yield wrapped
    wrapped.close()


def chat(client: openai.OpenAI, emulator: str = "", **kwargs: Any) -> Any:
    """A raw chat call (headers and parsed body) steering the emulator."""
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", MESSAGES)
    kwargs["extra_headers"] = {"x-emulator": emulator, **kwargs.get("extra_headers", {})}
    return client.chat.completions.with_raw_response.create(**kwargs)


def ledger(settings: Settings, request_id: str) -> LedgerRecord | None:
    async def get() -> LedgerRecord | None:
        store = open_store(settings.database_url)
        try:
            return await store.get(request_id)
        finally:
            await store.aclose()

    return anyio.run(get)


class TestFlexServed:
    def test_sync_chat_is_served_at_flex_with_the_outcome(
        self, client: openai.OpenAI, settings: Settings, emulator: Any
    ) -> None:
        """A wrapped call that starts in time is flex; its Outcome matches headers and ledger."""
        with capture() as outcomes:
            raw = chat(client, "flex_queue=0.05;prompt_tokens=1000")
        completion = raw.parse()
        assert isinstance(completion, openai.types.chat.ChatCompletion)
        assert completion.service_tier == "flex"
        assert completion.choices[0].message.content
        [outcome] = outcomes
        assert outcome.request_id == raw.headers["x-flexroute-request-id"]
        assert (outcome.route, outcome.tier_served, outcome.reason) == ("flex", "flex", None)
        assert outcome.fee == Decimal(raw.headers["x-flexroute-fee-usd"]) > 0
        assert outcome.saving == Decimal(raw.headers["x-flexroute-saving-usd"])
        assert outcome.cost == Decimal(raw.headers["x-flexroute-cost-usd"])
        assert outcome.standard_cost is not None
        assert outcome.cost is not None
        assert outcome.standard_cost > outcome.cost
        assert outcome.flex_wait_ms is not None
        assert outcome.flex_wait_ms < 2000
        record = ledger(settings, outcome.request_id)
        assert record is not None
        assert (record.route, record.fee, record.start_within_ms) == ("flex", outcome.fee, 2000)
        [attempt] = attempts(emulator, outcome.request_id)
        sent = json.loads(attempt["raw_body"])
        assert sent["service_tier"] == "flex"
        assert "start_within" not in sent

    def test_sync_stream_is_flex_and_its_outcome_arrives_at_the_end(
        self, client: openai.OpenAI
    ) -> None:
        """A streamed flex answer reads like the provider's; the outcome comes when it ends."""
        with capture() as outcomes:
            stream = client.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-emulator": "flex_queue=0.05;tokens=5"},
            )
            assert outcomes == []
            chunks = list(stream)
        assert all(c.choices for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks)
        [outcome] = outcomes
        assert (outcome.route, outcome.status) == ("flex", "ok")
        assert outcome.usage is not None
        assert outcome.usage.output_tokens > 0
        assert outcome.fee > 0

    def test_responses_api_sync_streaming_and_not(self, client: openai.OpenAI) -> None:
        """The Responses API goes flex through the wrapper, streaming and not."""
        with capture() as outcomes:
            response = client.responses.create(
                model="gpt-5-nano", input="hi", extra_headers={"x-emulator": "flex_queue=0.05"}
            )
            events = list(
                client.responses.create(
                    model="gpt-5-nano",
                    input="hi",
                    stream=True,
                    extra_headers={"x-emulator": "flex_queue=0.05"},
                )
            )
        assert response.service_tier == "flex"
        assert response.output_text
        assert events[-1].type == "response.completed"
        assert [o.route for o in outcomes] == ["flex", "flex"]

    def test_async_client_chat_and_responses_streaming_and_not(
        self, settings: Settings, emulator: Any
    ) -> None:
        """The async client is served at flex on both APIs, streaming and not."""

        async def main() -> list[str]:
            client = wrap(bare_async(emulator), start_within="2s", settings=settings)
            headers = {"x-emulator": "flex_queue=0.05"}
            with capture() as outcomes:
                completion = await client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, extra_headers=headers
                )
                assert completion.service_tier == "flex"
                stream = await client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, stream=True, extra_headers=headers
                )
                assert [c async for c in stream]
                response = await client.responses.create(
                    model="gpt-5-nano", input="hi", extra_headers=headers
                )
                assert response.output_text
                events = await client.responses.create(
                    model="gpt-5-nano", input="hi", stream=True, extra_headers=headers
                )
                assert [e.type async for e in events][-1] == "response.completed"
            await client.close()
            return [o.route for o in outcomes]

        assert anyio.run(main) == ["flex"] * 4

    def test_with_a_proxy_in_the_environment_httpx2_carries_flex(
        self, settings: Settings, emulator: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With a proxy in the environment the engine uses httpx2, which honours it; flex works."""
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert isinstance(default_upstream(), Httpx2Upstream)
        with wrap(bare(emulator), start_within="2s", settings=settings) as client:
            whole = chat(client, "flex_queue=0.05")
            streamed = list(
                client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, stream=True, extra_headers={"x-emulator": ""}
                )
            )
        assert whole.parse().service_tier == "flex"
        assert whole.headers["x-flexroute-route"] == "flex"
        assert {c.service_tier for c in streamed} == {"flex"}

    def test_a_client_on_the_public_url_uses_the_settings_upstream(
        self, tmp_path: Path, emulator: Any
    ) -> None:
        """A client left on api.openai.com goes where FLEXROUTE_OPENAI_BASE_URL points."""
        settings = Settings(
            openai_base_url=emulator.base_url,
            database_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        )
        with wrap(openai.OpenAI(api_key="sk-test", max_retries=0), settings=settings) as client:
            raw = chat(client, "")
        assert raw.headers["x-flexroute-route"] == "passthrough"
        assert attempts(emulator, raw.headers["x-flexroute-request-id"])


class TestStartWithin:
    def test_per_call_start_within_wins_over_the_client_default(
        self, client: openai.OpenAI
    ) -> None:
        """A call's own start_within replaces the client's: a short budget falls back early."""
        body = chat(client, "flex_queue=5", extra_body={"start_within": "300ms"})
        header = chat(client, "flex_queue=5", extra_headers={"x-flex-start-within": "0.3"})
        for raw in (body, header):
            assert raw.headers["x-flexroute-route"] == "fallback"
            assert int(raw.headers["x-flexroute-flex-wait-ms"]) < 1000

    def test_a_call_can_opt_out_of_the_client_budget(
        self, client: openai.OpenAI, emulator: Any
    ) -> None:
        """start_within None or an explicit non-flex tier in a call means passthrough."""
        opted_out = chat(client, "", extra_body={"start_within": None})
        assert opted_out.headers["x-flexroute-route"] == "passthrough"
        assert opted_out.headers["x-flexroute-reason"] == "no-start-within"
        priority = chat(client, "", service_tier="priority")
        assert priority.parse().service_tier == "priority"
        assert priority.headers["x-flexroute-route"] == "passthrough"
        [attempt] = attempts(emulator, priority.headers["x-flexroute-request-id"])
        assert json.loads(attempt["raw_body"]) == {
            "messages": MESSAGES,
            "model": MODEL,
            "service_tier": "priority",
        }

    def test_a_client_without_a_budget_passes_through_byte_for_byte(
        self, settings: Settings, emulator: Any
    ) -> None:
        """wrap() without start_within changes nothing on the wire; the call is still recorded."""
        with wrap(bare(emulator), settings=settings) as client, capture() as outcomes:
            raw = chat(client, "")
        assert raw.parse().service_tier == "default"
        [attempt] = attempts(emulator, raw.headers["x-flexroute-request-id"])
        assert json.loads(attempt["raw_body"]) == {"messages": MESSAGES, "model": MODEL}
        [outcome] = outcomes
        assert (outcome.route, outcome.reason) == ("passthrough", "no-start-within")
        assert outcome.fee == 0
        assert ledger(settings, outcome.request_id) is not None


class TestFallback:
    def test_sync_call_falls_back_at_the_deadline(self, settings: Settings, emulator: Any) -> None:
        """Flex not started in 300 ms: its connection closes and standard answers, no fee."""
        with (
            wrap(bare(emulator), start_within="300ms", settings=settings) as client,
            capture() as outcomes,
        ):
            raw = chat(client, "flex_queue=5")
        assert raw.parse().service_tier == "default"
        [outcome] = outcomes
        assert (outcome.route, outcome.reason) == ("fallback", "flex-not-started-in-time")
        assert outcome.tier_served == "standard"
        assert outcome.fee == outcome.saving == 0
        assert outcome.flex_wait_ms is not None
        assert 300 <= outcome.flex_wait_ms < 550
        flex, standard = attempts(emulator, outcome.request_id)
        assert flex["closed_early"]
        assert json.loads(standard["raw_body"])["service_tier"] == "default"

    def test_async_stream_falls_back_at_the_deadline(
        self, settings: Settings, emulator: Any
    ) -> None:
        """An async streaming call gets the standard stream after the flex deadline."""

        async def main() -> tuple[list[Any], list[Outcome]]:
            client = wrap(bare_async(emulator), start_within=0.3, settings=settings)
            with capture() as outcomes:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=MESSAGES,
                    stream=True,
                    extra_headers={"x-emulator": "flex_queue=5"},
                )
                tiers = [chunk.service_tier async for chunk in stream]
            await client.close()
            return tiers, outcomes

        tiers, outcomes = anyio.run(main)
        assert set(tiers) == {"default"}
        assert [o.route for o in outcomes] == ["fallback"]

    def test_an_sdk_retry_goes_straight_to_standard(
        self, settings: Settings, emulator: Any
    ) -> None:
        """The SDK's own retry skips flex (reason sdk-retry): retries never re-spend the budget."""
        base = bare(emulator, max_retries=1)
        with (
            wrap(base, start_within="2s", settings=settings) as client,
            capture() as outcomes,
            pytest.raises(openai.InternalServerError),
        ):
            chat(client, "status=500;retry_after=0.01")
        first, retry = outcomes
        assert (first.route, first.reason) == ("fallback", "flex-error")
        assert (retry.route, retry.reason) == ("passthrough", "sdk-retry")
        assert retry.fee == 0
        sent = [json.loads(a["raw_body"]).get("service_tier") for a in emulator.log()]
        assert sent == ["flex", "default", "default"]


class TestErrors:
    @pytest.mark.parametrize(
        ("kwargs", "needle"),
        [
            ({"extra_body": {"start_within": "soon"}}, '"soon"'),
            ({"extra_headers": {"x-flex-start-within": "20m"}}, "15 minutes"),
        ],
    )
    def test_a_bad_start_within_is_the_sdks_bad_request_error(
        self, client: openai.OpenAI, emulator: Any, kwargs: dict[str, Any], needle: str
    ) -> None:
        """flexroute's own 400 reaches the caller as openai.BadRequestError; nothing is sent."""
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, **kwargs)
        assert needle in caught.value.message
        assert emulator.log() == []

    def test_provider_errors_are_the_sdks_own_exceptions(self, client: openai.OpenAI) -> None:
        """A provider 400 and 401 surface as BadRequestError and AuthenticationError."""
        with pytest.raises(openai.BadRequestError) as bad:
            chat(client, "status=400")
        assert bad.value.response.headers["x-flexroute-route"] == "flex"
        with pytest.raises(openai.AuthenticationError):
            chat(client, "status=401", extra_body={"start_within": None})

    def test_the_sdk_timeout_bounds_the_flex_wait(self, settings: Settings, emulator: Any) -> None:
        """A call that outlives the SDK's timeout raises APITimeoutError and closes flex."""
        with (
            wrap(bare(emulator, timeout=0.3), start_within="30s", settings=settings) as client,
            capture() as outcomes,
            pytest.raises(openai.APITimeoutError),
        ):
            chat(client, "flex_queue=5")
        [attempt] = emulator.log()
        assert attempt["closed_early"]
        assert [o.status for o in outcomes] == ["client_closed"]

    def test_a_bad_budget_or_object_is_refused_at_wrap_time(self, emulator: Any) -> None:
        """wrap() refuses a bad start_within (ConfigError) and any non-SDK object (TypeError)."""
        with pytest.raises(ConfigError, match="soon"):
            wrap(bare(emulator), start_within="soon")
        for thing in (object(), httpx2.Client(), "openai"):
            with pytest.raises(TypeError, match=r"openai\.OpenAI.*anthropic\.AsyncAnthropic"):
                wrap(thing)

    def test_a_failing_outcome_callback_is_logged_not_raised(
        self, settings: Settings, emulator: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bug in on_outcome never fails (and so never retries) the call."""

        def broken(outcome: Outcome) -> None:
            raise RuntimeError("callback bug")

        with (
            wrap(bare(emulator), settings=settings, on_outcome=broken) as client,
            caplog.at_level(logging.ERROR, logger="flexroute.sdk"),
        ):
            assert chat(client, "").parse().choices
        assert "outcome listener raised" in caplog.text


class TestOutcomes:
    def test_outcomes_are_right_under_50_concurrent_async_calls(
        self, settings: Settings, emulator: Any
    ) -> None:
        """50 tasks on one client each capture exactly their own outcome; the callback all 50."""
        heard: list[Outcome] = []

        async def main() -> list[tuple[str, str, list[Outcome]]]:
            client = wrap(
                bare_async(emulator),
                start_within="300ms",
                settings=settings,
                on_outcome=heard.append,
            )
            results: list[tuple[str, str, list[Outcome]]] = []

            async def one(i: int) -> None:
                queue = "0.01" if i % 2 else "5"
                with capture() as mine:
                    raw = await client.chat.completions.with_raw_response.create(
                        model=MODEL,
                        messages=MESSAGES,
                        stream=i % 3 == 0,
                        extra_headers={"x-emulator": f"flex_queue={queue}"},
                    )
                    parsed: Any = raw.parse()
                    if i % 3 == 0:
                        assert [c async for c in parsed]
                route = raw.headers["x-flexroute-route"]
                if queue == "5":
                    assert route == "fallback"
                results.append((raw.headers["x-flexroute-request-id"], route, mine))

            async with anyio.create_task_group() as group:
                for i in range(50):
                    group.start_soon(one, i)
            await client.close()
            return results

        results = anyio.run(main)
        assert len(results) == 50
        for request_id, route, mine in results:
            [outcome] = mine
            assert (outcome.request_id, outcome.route) == (request_id, route)
        assert sorted(o.request_id for o in heard) == sorted(r[0] for r in results)

    def test_outcomes_follow_the_calling_thread(self, client: openai.OpenAI) -> None:
        """Threads sharing one sync client each capture only their own calls; blocks nest."""
        seen: dict[int, tuple[list[str], list[Outcome]]] = {}

        def worker(n: int) -> None:
            with capture() as mine:
                ids = [chat(client, "").headers["x-flexroute-request-id"] for _ in range(3)]
            seen[n] = (ids, mine)

        with capture() as outer:
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            inner_id = chat(client, "").headers["x-flexroute-request-id"]
        for ids, mine in seen.values():
            assert [o.request_id for o in mine] == ids
        assert [o.request_id for o in outer] == [inner_id]  # threads do not inherit context


class TestClients:
    def test_wrap_returns_a_new_client_of_the_same_type(
        self, settings: Settings, emulator: Any
    ) -> None:
        """The wrapped client has the original's type and options; the original is untouched."""
        original = bare(emulator, timeout=12.0, max_retries=3)
        wrapped = wrap(original, settings=settings)
        assert type(wrapped) is openai.OpenAI
        assert wrapped is not original
        assert (wrapped.timeout, wrapped.max_retries) == (12.0, 3)
        assert wrapped.base_url == original.base_url
        assert wrapped._client is not original._client
        assert flexroute.wrap is wrap
        wrapped.close()
        assert not original.is_closed()

    def test_close_leaves_no_threads_behind(self, settings: Settings, emulator: Any) -> None:
        """After close() the engine thread, the ledger writer and abandoned streams are gone."""
        before = set(threading.enumerate())
        client = wrap(bare(emulator), start_within="2s", settings=settings)
        with capture() as outcomes:
            chat(client, "flex_queue=0.01")
            abandoned = client.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-emulator": "tokens=50"},
            )
            next(iter(abandoned))
        assert threads_started_since(before, timeout=0) >= {"flexroute-sdk", "flexroute-ledger"}
        client.close()
        assert threads_started_since(before) == set()
        assert [o.status for o in outcomes] == ["ok", "client_closed"]

    def test_async_close_ends_abandoned_streams(self, settings: Settings, emulator: Any) -> None:
        """close() on an async client closes a stream left half-read; the ledger says so."""

        async def main() -> list[Outcome]:
            client = wrap(bare_async(emulator), settings=settings)
            with capture() as outcomes:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=MESSAGES,
                    stream=True,
                    extra_headers={"x-emulator": "tokens=50;token_interval=0.05"},
                )
                await stream.__anext__()
            await client.close()
            return outcomes

        [outcome] = anyio.run(main)
        assert outcome.status == "client_closed"
        [attempt] = emulator.log()
        assert attempt["closed_early"]

    def test_sync_client_works_from_a_running_loops_worker_thread(
        self, client: openai.OpenAI
    ) -> None:
        """A sync wrapped client called from to_thread inside an event loop just works."""

        async def main() -> tuple[str, list[Outcome]]:
            with capture() as outcomes:
                raw = await anyio.to_thread.run_sync(chat, client, "flex_queue=0.01")
            return raw.headers["x-flexroute-route"], outcomes

        route, outcomes = anyio.run(main)
        assert route == "flex"
        assert [o.route for o in outcomes] == ["flex"]
