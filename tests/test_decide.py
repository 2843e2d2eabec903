"""The routing table of SPEC §2, as a pure function."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from flexroute.catalog import ModelPrices, TierPrices
from flexroute.dialects.base import MISSING, RequestFacts
from flexroute.dialects.openai_chat import ChatDialect
from flexroute.errors import RequestRejected
from flexroute.routing.decide import Reason, Route, decide
from flexroute.usage import Tier

CHAT = ChatDialect()
PRICE = TierPrices(input=Decimal("1"), cached_input=Decimal("0.1"), output=Decimal("8"))


def prices(*tiers: Tier) -> ModelPrices:
    return ModelPrices(
        provider="openai",
        model="m",
        tiers=dict.fromkeys(tiers, PRICE),
        long_context_threshold=None,
        long_context_tiers={},
        source="test",
        checked=dt.date(2026, 11, 1),
    )


FLEXIBLE = prices(Tier.STANDARD, Tier.FLEX)


def facts(tier: str | None = None, start_within: object = MISSING) -> RequestFacts:
    return RequestFacts(
        model="m", tier=tier, stream=False, start_within=start_within, wants_usage=False
    )


def route(
    f: RequestFacts,
    p: ModelPrices | None = FLEXIBLE,
    header: str | None = None,
    default: float | None = None,
) -> tuple[Route, Reason | None, Tier | None]:
    decision = decide(CHAT, f, p, header_start_within=header, default_start_within=default)
    return decision.route, decision.reason, decision.tier


class TestDecide:
    def test_start_within_on_a_flex_capable_model_is_flex(self) -> None:
        """The main row: flex, billable, with the parsed budget."""
        decision = decide(
            CHAT,
            facts(start_within="30s"),
            FLEXIBLE,
            header_start_within=None,
            default_start_within=None,
        )
        assert (decision.route, decision.tier, decision.start_within) == (Route.FLEX, Tier.FLEX, 30)
        assert decision.billable

    def test_explicit_flex_tier_with_start_within_is_flex(self) -> None:
        """service_tier flex plus a budget agrees and is flex."""
        assert route(facts("flex", "1s"))[0] is Route.FLEX

    def test_unpriced_and_not_flex_capable_go_standard(self) -> None:
        """No price or no flex price: standard tier, passthrough, with the reason."""
        assert route(facts(start_within=5), None) == (
            Route.PASSTHROUGH,
            Reason.UNPRICED,
            Tier.STANDARD,
        )
        assert route(facts(start_within=5), prices(Tier.STANDARD)) == (
            Route.PASSTHROUGH,
            Reason.NOT_FLEX_CAPABLE,
            Tier.STANDARD,
        )

    @pytest.mark.parametrize("tier", [None, "default", "priority", "auto", "scale", "turbo"])
    def test_without_start_within_everything_but_flex_passes_through(
        self, tier: str | None
    ) -> None:
        """Known and unknown tiers pass through unchanged when no budget is given."""
        assert route(facts(tier)) == (Route.PASSTHROUGH, Reason.NO_START_WITHIN, None)

    def test_flex_without_start_within_uses_the_operator_default_or_400s(self) -> None:
        """service_tier flex alone: the configured default budget, else a 400 naming the fix."""
        assert route(facts("flex"), default=20.0)[0] is Route.FLEX
        with pytest.raises(RequestRejected, match="start_within") as caught:
            route(facts("flex"))
        assert caught.value.code == "start_within_required"

    @pytest.mark.parametrize("tier", ["default", "priority", "auto"])
    def test_start_within_with_another_tier_conflicts(self, tier: str) -> None:
        """A budget plus a non-flex tier is a 400 for conflicting instructions."""
        with pytest.raises(RequestRejected) as caught:
            route(facts(tier, "10s"))
        assert caught.value.status == 400
        assert caught.value.param == "service_tier"

    def test_body_and_header_must_agree(self) -> None:
        """Both given and equal is fine; both given and different is a 400."""
        assert route(facts(start_within="30s"), header="30")[0] is Route.FLEX
        with pytest.raises(RequestRejected, match="disagree"):
            route(facts(start_within="30s"), header="10s")

    def test_header_alone_sets_the_budget(self) -> None:
        """The x-flex-start-within header is enough."""
        assert route(facts(), header="2m")[0] is Route.FLEX
