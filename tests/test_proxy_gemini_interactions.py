"""google-genai's ``client.interactions`` → proxy → emulator: flex routing on the Interactions API
(SPEC §8: ``POST /v1beta/interactions``, routed like generateContent; the SDK's default is /v1)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from google import genai
from google.genai import _interactions_errors as errors
from google.genai import types
from google.genai.interactions import Interaction, InteractionCompletedEvent, StepDelta, TextDelta

from flexroute.catalog import default_catalog
from flexroute.dialects.gemini_interactions import interactions_usage
from flexroute.fees import compute_charge
from flexroute.usage import Tier
from tests.conftest import Proxy, attempts

MODEL = "gemini-2.5-flash"


def gemini(proxy: Proxy, api_version: str | None = None) -> genai.Client:
    """The SDK through the proxy, its own retries off so each test sees flexroute's."""
    options = types.HttpOptions(
        base_url=proxy.url,
        api_version=api_version,
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key="test-gemini-key", http_options=options)


def steer(controls: str, start_within: str | None = None) -> dict[str, str]:
    headers = {"x-emulator": controls}
    if start_within is not None:
        headers["x-flex-start-within"] = start_within
    return headers


def sent(attempt: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(attempt["raw_body"])
    return body


def one_request(emulator: Any) -> str:
    """The flexroute request id behind every attempt the emulator saw (there is one request)."""
    ids: set[str] = {entry["client_request_id"] for entry in emulator.log()}
    assert len(ids) == 1
    return ids.pop()


class TestInteractions:
    @pytest.mark.parametrize("api_version", [None, "v1beta"])
    def test_flex_that_starts_in_time_is_served_flex_with_the_fee(
        self, proxy: Proxy, emulator: Any, api_version: str | None
    ) -> None:
        """A flex interaction that starts in time: flex tier served, fee 20% of the saving."""
        client = gemini(proxy, api_version)
        raw = client.interactions.with_raw_response.create(
            model=MODEL,
            input="hello",
            extra_body={"start_within": "2s"},
            extra_headers=steer("flex_queue=0.05;prompt_tokens=800"),
        )
        interaction = raw.parse()
        assert isinstance(interaction, Interaction)
        assert interaction.output_text == "Flex capacity is cheaper when the queue is."
        assert interaction.service_tier == "flex"
        headers = raw.headers
        assert (headers["x-flexroute-route"], headers["x-flexroute-tier"]) == ("flex", "flex")
        usage = interactions_usage(raw.json()["usage"])
        prices = default_catalog().lookup("gemini", MODEL)
        assert usage is not None
        assert prices is not None
        charge = compute_charge(
            prices.cost(Tier.STANDARD, usage), prices.cost(Tier.FLEX, usage), billable=True
        )
        assert Decimal(headers["x-flexroute-fee-usd"]) == charge.fee > 0
        [attempt] = attempts(emulator, headers["x-flexroute-request-id"])
        assert attempt["path"] == f"/{api_version or 'v1'}/interactions"
        upstream = sent(attempt)
        assert "start_within" not in upstream
        assert (upstream["service_tier"], upstream["stream"]) == ("flex", True)
        assert "x-server-timeout" in attempt["headers"]
        assert attempt["headers"]["accept"] == "text/event-stream"

    def test_a_flex_queue_beyond_the_budget_falls_back_to_standard(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """Flex has not started at the deadline: cancelled, and the standard tier answers."""
        client = gemini(proxy)
        raw = client.interactions.with_raw_response.create(
            model=MODEL, input="hello", extra_headers=steer("flex_queue=5", "300ms")
        )
        interaction = raw.parse()
        assert isinstance(interaction, Interaction)
        assert interaction.service_tier == "standard"
        headers = raw.headers
        assert headers["x-flexroute-route"] == "fallback"
        assert headers["x-flexroute-reason"] == "flex-not-started-in-time"
        assert headers["x-flexroute-tier"] == "standard"
        assert Decimal(headers["x-flexroute-fee-usd"]) == 0
        flex, standard = attempts(emulator, headers["x-flexroute-request-id"])
        assert flex["closed_early"]
        assert flex["first_output_at"] is None
        assert sent(flex)["service_tier"] == "flex"
        assert sent(standard)["service_tier"] == "standard"
        assert "stream" not in sent(standard)  # the client's own non-streaming request

    def test_a_streamed_flex_interaction(self, proxy: Proxy, emulator: Any) -> None:
        """stream=True: the SDK's events arrive whole; the ledger has the flex fee."""
        client = gemini(proxy)
        stream = client.interactions.create(
            model=MODEL,
            input="hello",
            stream=True,
            extra_body={"start_within": "2s"},
            extra_headers=steer("flex_queue=0.05;tokens=5"),
        )
        received = list(stream)
        deltas = [e.delta for e in received if isinstance(e, StepDelta)]
        assert "".join(d.text for d in deltas if isinstance(d, TextDelta)) == (
            "Flex capacity is cheaper when."
        )
        assert isinstance(received[-1], InteractionCompletedEvent)
        record = proxy.record(one_request(emulator))
        assert (record["route"], record["tier_served"], record["status"]) == ("flex", "flex", "ok")
        assert Decimal(record["fee_usd"]) > 0
        [attempt] = emulator.log()
        assert "start_within" not in sent(attempt)

    def test_a_streamed_fallback(self, proxy: Proxy, emulator: Any) -> None:
        """A stream whose flex attempt queues past the budget is served by standard."""
        client = gemini(proxy)
        stream = client.interactions.create(
            model=MODEL,
            input="hello",
            stream=True,
            extra_headers=steer("flex_queue=5;tokens=3", "300ms"),
        )
        events = list(stream)
        assert [e.event_type for e in events].count("interaction.created") == 1
        record = proxy.record(one_request(emulator))
        assert (record["route"], record["tier_served"]) == ("fallback", "standard")
        assert record["fee_usd"] == "0.000000000"
        flex, standard = emulator.log()
        assert (sent(flex)["service_tier"], sent(standard)["service_tier"]) == ("flex", "standard")
        assert sent(standard)["stream"] is True

    def test_a_refused_flex_attempt_is_retried_inside_the_budget(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """503 service_unavailable once, then flex serves: route flex, two attempts."""
        client = gemini(proxy)
        raw = client.interactions.with_raw_response.create(
            model=MODEL,
            input="hello",
            extra_headers=steer("flex_refuse=1;refuse_status=503;retry_after=0.05", "3s"),
        )
        assert raw.headers["x-flexroute-route"] == "flex"
        refused, served = attempts(emulator, raw.headers["x-flexroute-request-id"])
        assert (refused["status"], served["status"]) == (503, 200)

    def test_background_is_passed_through(self, proxy: Proxy, emulator: Any) -> None:
        """background: true is a job, not a wait: sent once, as written but for start_within."""
        client = gemini(proxy)
        raw = client.interactions.with_raw_response.create(
            model=MODEL,
            input="hello",
            background=True,
            extra_body={"start_within": "2s"},
            extra_headers=steer("tokens=2"),
        )
        assert raw.headers["x-flexroute-route"] == "passthrough"
        assert raw.headers["x-flexroute-reason"] == "background-request"
        assert Decimal(raw.headers["x-flexroute-fee-usd"]) == 0
        [attempt] = attempts(emulator, raw.headers["x-flexroute-request-id"])
        assert sent(attempt) == {"model": MODEL, "input": "hello", "background": True}

    def test_a_bad_start_within_is_the_sdks_bad_request(self, proxy: Proxy, emulator: Any) -> None:
        """flexroute's 400 is in the Interactions error shape the SDK parses; nothing is sent."""
        client = gemini(proxy)
        with pytest.raises(errors.BadRequestError) as caught:
            client.interactions.create(model=MODEL, input="x", extra_body={"start_within": "soon"})
        body: Any = caught.value.body
        assert body["error"]["code"] == "invalid_start_within"
        assert "soon" in body["error"]["message"]
        assert emulator.log() == []

    def test_without_start_within_it_is_passed_through(self, proxy: Proxy, emulator: Any) -> None:
        """No budget: one request, its tier untouched, no fee."""
        client = gemini(proxy)
        raw = client.interactions.with_raw_response.create(
            model=MODEL, input="hi", service_tier="priority", extra_headers=steer("")
        )
        assert raw.headers["x-flexroute-route"] == "passthrough"
        [attempt] = attempts(emulator, raw.headers["x-flexroute-request-id"])
        assert sent(attempt)["service_tier"] == "priority"
        assert proxy.record(raw.headers["x-flexroute-request-id"])["tier_served"] == "priority"
