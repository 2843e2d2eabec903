"""flexroute.wrap around the real google-genai SDK (sync and ``.aio``), against the emulator."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from flexroute import Outcome, Settings, capture, wrap
from tests.conftest import attempts, threads_started_since

MODEL = "gemini-2.5-flash"


def bare(emulator: Any) -> genai.Client:
    options = types.HttpOptions(base_url=emulator.base_url, api_version="v1beta")
    return genai.Client(api_key="test-gemini-key", http_options=options)


def config(emulator: str, start_within: str | None = None) -> types.GenerateContentConfig:
    """Per-call options: the emulator's script and, optionally, the call's own budget."""
    headers = {"x-emulator": emulator}
    if start_within is not None:
        headers["x-flex-start-within"] = start_within
    return types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers))


def headers_of(response: types.GenerateContentResponse) -> dict[str, str]:
    assert response.sdk_http_response is not None
    return dict(response.sdk_http_response.headers or {})


class TestFlexServed:
    def test_generate_content_is_flex_with_the_outcome(
        self, settings: Settings, emulator: Any
    ) -> None:
        """A sync call that starts in time is flex; the Outcome matches the headers."""
        with (
            wrap(bare(emulator), start_within="2s", settings=settings) as client,
            capture() as outcomes,
        ):
            response = client.models.generate_content(
                model=MODEL, contents="hello", config=config("flex_queue=0.05")
            )
        assert response.text
        headers = headers_of(response)
        [outcome] = outcomes
        assert outcome.request_id == headers["x-flexroute-request-id"]
        assert (outcome.provider, outcome.route, outcome.tier_served) == ("gemini", "flex", "flex")
        assert outcome.fee == Decimal(headers["x-flexroute-fee-usd"]) > 0
        [attempt] = attempts(emulator, outcome.request_id)
        assert ":streamGenerateContent" in attempt["path"]
        assert json.loads(attempt["raw_body"])["serviceTier"] == "flex"

    def test_generate_content_stream_is_flex(self, settings: Settings, emulator: Any) -> None:
        """A sync stream arrives whole at flex; its outcome comes when it ends."""
        with (
            wrap(bare(emulator), start_within="2s", settings=settings) as client,
            capture() as outcomes,
        ):
            chunks = list(
                client.models.generate_content_stream(
                    model=MODEL, contents="hello", config=config("flex_queue=0.05;tokens=5")
                )
            )
        assert "".join(c.text or "" for c in chunks)
        assert headers_of(chunks[0])["x-flexroute-route"] == "flex"
        [outcome] = outcomes
        assert (outcome.route, outcome.status) == ("flex", "ok")
        assert outcome.fee > 0

    def test_aio_generate_content_and_stream(self, settings: Settings, emulator: Any) -> None:
        """The .aio client goes flex too, whole and streamed."""

        async def main() -> list[str]:
            client = wrap(bare(emulator), start_within="2s", settings=settings)
            with capture() as outcomes:
                response = await client.aio.models.generate_content(
                    model=MODEL, contents="hi", config=config("flex_queue=0.05")
                )
                assert response.text
                stream = await client.aio.models.generate_content_stream(
                    model=MODEL, contents="hi", config=config("flex_queue=0.05;tokens=4")
                )
                assert "".join([c.text or "" async for c in stream])
            await client.aio.aclose()
            client.close()
            return [o.route for o in outcomes]

        assert anyio.run(main) == ["flex", "flex"]


class TestRoutes:
    def test_falls_back_at_the_deadline(self, settings: Settings, emulator: Any) -> None:
        """Flex not started by the call's own 300 ms budget: standard answers, no fee."""
        with (
            wrap(bare(emulator), start_within="30s", settings=settings) as client,
            capture() as outcomes,
        ):
            response = client.models.generate_content(
                model=MODEL, contents="hi", config=config("flex_queue=5", "300ms")
            )
        assert response.text
        [outcome] = outcomes
        assert (outcome.route, outcome.reason) == ("fallback", "flex-not-started-in-time")
        assert outcome.tier_served == "standard"
        assert outcome.fee == 0
        flex, standard = attempts(emulator, outcome.request_id)
        assert flex["closed_early"]
        assert json.loads(standard["raw_body"])["serviceTier"] == "standard"

    def test_aio_stream_falls_back(self, settings: Settings, emulator: Any) -> None:
        """An .aio stream whose flex does not start in time is served by standard."""

        async def main() -> list[Outcome]:
            client = wrap(bare(emulator), start_within="300ms", settings=settings)
            with capture() as outcomes:
                stream = await client.aio.models.generate_content_stream(
                    model=MODEL, contents="hi", config=config("flex_queue=5")
                )
                assert [c async for c in stream]
            await client.aio.aclose()
            return outcomes

        [outcome] = anyio.run(main)
        assert outcome.route == "fallback"

    def test_without_a_budget_calls_pass_through(self, settings: Settings, emulator: Any) -> None:
        """No start_within anywhere: one request as the SDK sent it, recorded with no fee."""
        with wrap(bare(emulator), settings=settings) as client, capture() as outcomes:
            client.models.generate_content(model=MODEL, contents="hi", config=config(""))
        [outcome] = outcomes
        assert (outcome.route, outcome.reason) == ("passthrough", "no-start-within")
        assert outcome.fee == 0
        [attempt] = attempts(emulator, outcome.request_id)
        assert "serviceTier" not in json.loads(attempt["raw_body"])


class TestErrors:
    def test_a_bad_start_within_is_the_sdks_client_error(
        self, settings: Settings, emulator: Any
    ) -> None:
        """flexroute's 400 comes back in Google's shape and genai raises ClientError."""
        with (
            wrap(bare(emulator), settings=settings) as client,
            pytest.raises(genai_errors.ClientError) as caught,
        ):
            client.models.generate_content(model=MODEL, contents="x", config=config("", "soon"))
        assert caught.value.code == 400
        assert "soon" in str(caught.value)
        assert emulator.log() == []

    def test_provider_errors_are_the_sdks_own_exceptions(
        self, settings: Settings, emulator: Any
    ) -> None:
        """A provider 400 raises ClientError and a 500 ServerError, sync and .aio."""
        with wrap(bare(emulator), start_within="2s", settings=settings) as client:
            with pytest.raises(genai_errors.ClientError):
                client.models.generate_content(
                    model=MODEL, contents="x", config=config("status=400")
                )

            async def main() -> None:
                with pytest.raises(genai_errors.ServerError):
                    await client.aio.models.generate_content(
                        model=MODEL, contents="x", config=config("status=500")
                    )
                await client.aio.aclose()

            anyio.run(main)

    def test_vertex_clients_and_other_objects_are_refused(self) -> None:
        """Only Gemini Developer API clients can be wrapped; anything else is a TypeError."""
        with pytest.raises(TypeError, match="Vertex AI"):
            wrap(genai.Client(vertexai=True, api_key="x"))
        with pytest.raises(TypeError, match=r"google\.genai\.Client"):
            wrap(types.HttpOptions())


class TestOutcomesAndClients:
    def test_outcomes_are_right_under_50_concurrent_aio_calls(
        self, settings: Settings, emulator: Any
    ) -> None:
        """50 tasks on one .aio client each capture exactly their own outcome."""
        heard: list[Outcome] = []

        async def main() -> list[tuple[str, str, list[Outcome]]]:
            client = wrap(
                bare(emulator), start_within="300ms", settings=settings, on_outcome=heard.append
            )
            results: list[tuple[str, str, list[Outcome]]] = []

            async def one(i: int) -> None:
                script = "flex_queue=0.01" if i % 2 else "flex_queue=5"
                with capture() as mine:
                    response = await client.aio.models.generate_content(
                        model=MODEL, contents="hi", config=config(script)
                    )
                headers = headers_of(response)
                if script == "flex_queue=5":
                    assert headers["x-flexroute-route"] == "fallback"
                results.append(
                    (headers["x-flexroute-request-id"], headers["x-flexroute-route"], mine)
                )

            async with anyio.create_task_group() as group:
                for i in range(50):
                    group.start_soon(one, i)
            await client.aio.aclose()
            return results

        results = anyio.run(main)
        assert len(results) == 50
        for request_id, route, mine in results:
            [outcome] = mine
            assert (outcome.request_id, outcome.route) == (request_id, route)
        assert sorted(o.request_id for o in heard) == sorted(r[0] for r in results)

    def test_wrap_returns_a_client_and_close_leaves_no_threads(
        self, settings: Settings, emulator: Any
    ) -> None:
        """A genai.Client comes back; close() and aio.aclose() stop every thread it started."""
        before = set(threading.enumerate())
        original = bare(emulator)
        client = wrap(original, start_within="2s", settings=settings)
        assert type(client) is genai.Client
        assert client is not original
        client.models.generate_content(model=MODEL, contents="hi", config=config(""))

        async def main() -> None:
            await client.aio.models.generate_content(model=MODEL, contents="hi", config=config(""))
            await client.aio.aclose()

        anyio.run(main)
        assert "flexroute-sdk" in threads_started_since(before, timeout=0)
        client.close()
        assert threads_started_since(before) == set()

    def test_wrapping_aio_alone_gives_an_aio_client(
        self, settings: Settings, emulator: Any
    ) -> None:
        """wrap(client.aio) returns a wrapped google.genai AsyncClient."""
        aio = wrap(bare(emulator).aio, start_within="2s", settings=settings)
        assert type(aio) is type(bare(emulator).aio)

        async def main() -> str:
            response = await aio.models.generate_content(
                model=MODEL, contents="hi", config=config("flex_queue=0.01")
            )
            await aio.aclose()
            return headers_of(response)["x-flexroute-route"]

        assert anyio.run(main) == "flex"

    def test_sync_client_works_from_a_running_loops_worker_thread(
        self, settings: Settings, emulator: Any
    ) -> None:
        """The sync wrapped client called from to_thread inside an event loop just works."""
        client = wrap(bare(emulator), start_within="2s", settings=settings)

        def call() -> str:
            response = client.models.generate_content(
                model=MODEL, contents="hi", config=config("flex_queue=0.01")
            )
            return headers_of(response)["x-flexroute-route"]

        async def main() -> tuple[str, list[Outcome]]:
            with capture() as outcomes:
                route = await anyio.to_thread.run_sync(call)
            return route, outcomes

        route, outcomes = anyio.run(main)
        client.close()
        assert route == "flex"
        assert [o.route for o in outcomes] == ["flex"]
