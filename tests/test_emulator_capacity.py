"""The emulator's pure parts: the control header, the seeded capacity model, the helpers."""

from __future__ import annotations

import httpx2
import pytest

from flexroute.emulator import ControlError, Controls, EmulatorConfig, Tier, parse_controls
from flexroute.emulator.capacity import CapacityModel, refusal_key
from flexroute.emulator.controls import ALWAYS
from flexroute.emulator.log import redact
from flexroute.testing import emulator, serve_in_thread


class TestControls:
    def test_absent_or_blank_header_means_seeded(self) -> None:
        """No header, or a blank one, leaves the request to the seeded model."""
        assert parse_controls(None) is None
        assert parse_controls("  ") is None

    def test_parses_every_kind_of_value(self) -> None:
        """Seconds, counts, ``always``, flags, tiers and statuses are parsed."""
        controls = parse_controls(
            "flex_queue=0.5; flex_refuse=always;tool_call=1;serve_tier=standard;status=503;tokens=3"
        )
        assert controls == Controls(
            flex_queue=0.5,
            flex_refuse=ALWAYS,
            tool_call=True,
            serve_tier="default",
            status=503,
            tokens=3,
        )

    @pytest.mark.parametrize(
        "header", ["flex_queue=-1", "tokens=many", "nonsense=1", "status=200", "flex_queue"]
    )
    def test_rejects_bad_controls(self, header: str) -> None:
        """Unknown keys and malformed values raise ControlError naming them."""
        with pytest.raises(ControlError, match=header.split("=")[0]):
            parse_controls(header)


class TestCapacityModel:
    def test_same_seed_same_plans(self) -> None:
        """One seed and one request sequence give the same plans every run."""
        tiers = [Tier.FLEX, Tier.STANDARD, Tier.FLEX, Tier.PRIORITY] * 10
        runs = [
            [CapacityModel(EmulatorConfig(seed=3)).plan(t, None, "k") for t in tiers]
            for _ in range(2)
        ]
        assert runs[0] == runs[1]
        model = CapacityModel(EmulatorConfig(seed=3))
        first = [model.plan(t, None, "k") for t in tiers]
        model.reset()
        assert [model.plan(t, None, "k") for t in tiers] == first

    def test_flex_queues_longer_than_standard(self) -> None:
        """Seeded flex queues sit around their median, far above the standard tier's."""
        model = CapacityModel(EmulatorConfig(seed=1, flex_refusal_rate=0.0))
        flex = sorted(model.plan(Tier.FLEX, None, "k").queue for _ in range(201))
        standard = sorted(model.plan(Tier.STANDARD, None, "k").queue for _ in range(201))
        assert 0.5 < flex[100] < 2.0
        assert standard[100] < 0.1

    def test_refusal_rate_touches_flex_only(self) -> None:
        """With refusal rate 1 every flex plan is a refusal and no standard plan is."""
        model = CapacityModel(EmulatorConfig(flex_refusal_rate=1.0, retry_after=2.0))
        plan = model.plan(Tier.FLEX, None, "k")
        assert plan.refusal is not None
        assert (plan.refusal.status, plan.refusal.retry_after) == (None, 2.0)  # wire's usual
        assert model.plan(Tier.STANDARD, None, "k").refusal is None

    def test_fast_mode_answers_at_once(self) -> None:
        """``fast=True`` plans no queue, no refusal and no token interval."""
        model = CapacityModel(EmulatorConfig(fast=True, flex_refusal_rate=1.0))
        plan = model.plan(Tier.FLEX, None, "k")
        assert (plan.queue, plan.token_interval, plan.refusal) == (0.0, 0.0, None)

    def test_scripted_refusals_count_per_key(self) -> None:
        """``flex_refuse=2`` refuses a key's first two flex attempts, then serves it."""
        model = CapacityModel(EmulatorConfig())
        controls = Controls(flex_refuse=2, retry_after=0.5, refuse_status=503)
        plans = [model.plan(Tier.FLEX, controls, "a") for _ in range(3)]
        assert [p.refusal is not None for p in plans] == [True, True, False]
        assert plans[0].refusal is not None
        assert plans[0].refusal.status == 503
        assert model.plan(Tier.FLEX, controls, "b").refusal is not None
        model.reset()
        assert model.plan(Tier.FLEX, controls, "a").refusal is not None

    def test_refusal_key_prefers_the_request_id(self) -> None:
        """Attempts are matched by x-client-request-id, else by identical bodies."""
        assert refusal_key("r1", b"x") == refusal_key("r1", b"y")
        assert refusal_key(None, b"x") == refusal_key("", b"x") != refusal_key(None, b"y")

    def test_config_is_validated(self) -> None:
        """Probabilities outside [0, 1] are refused at construction."""
        with pytest.raises(ValueError, match="flex_refusal_rate"):
            EmulatorConfig(flex_refusal_rate=1.5)


class TestHelpers:
    def test_redact_keeps_the_scheme(self) -> None:
        """Credential headers are fingerprinted; other headers are kept."""
        assert redact("Authorization", "Bearer sk-1").startswith("Bearer sha256:")
        assert redact("x-goog-api-key", "k").startswith("sha256:")
        assert redact("x-other", "v") == "v"

    def test_serve_in_thread_serves_and_stops(self) -> None:
        """``serve_in_thread`` yields a live URL and frees the port on exit."""
        with emulator() as running, serve_in_thread(running.app) as url:
            assert httpx2.get(f"{url}/v1/models").status_code == 200
        with pytest.raises(httpx2.ConnectError):
            httpx2.get(f"{url}/v1/models", timeout=1)

    def test_unknown_path_is_a_404(self) -> None:
        """Paths the emulator does not serve get a 404 in OpenAI's error format."""
        with emulator() as running:
            response = httpx2.get(f"{running.base_url}/v1/unknown")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_url"


class TestSeededOverHttp:
    def test_seeded_sequence_repeats_after_reset(self) -> None:
        """Without controls the seeded model refuses and queues the same way after a reset."""
        config = EmulatorConfig(
            seed=5, flex_refusal_rate=0.5, flex_queue_median=0.01, flex_token_interval=0.0
        )
        body = {"model": "gpt-5", "messages": [], "service_tier": "flex"}
        with emulator(config) as running:
            runs = []
            for _ in range(2):
                running.reset()
                url = f"{running.base_url}/v1/chat/completions"
                runs.append([httpx2.post(url, json=body).status_code for _ in range(8)])
        assert runs[0] == runs[1]
        assert set(runs[0]) == {200, 429}
