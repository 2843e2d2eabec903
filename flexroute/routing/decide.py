"""Which route a request takes (SPEC §2). Pure and synchronous: facts in, decision out."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flexroute.catalog import ModelPrices
from flexroute.dialects.base import MISSING, Dialect, RequestFacts
from flexroute.duration import parse_start_within
from flexroute.errors import RequestRejected
from flexroute.usage import Tier


class Route(enum.StrEnum):
    FLEX = "flex"
    FALLBACK = "fallback"
    PASSTHROUGH = "passthrough"


class Reason(enum.StrEnum):
    NO_START_WITHIN = "no-start-within"
    ANTHROPIC = "anthropic-proxy-only"
    UNPRICED = "model-unpriced"
    NOT_FLEX_CAPABLE = "model-not-flex-capable"
    NOT_STARTED = "flex-not-started-in-time"
    UNAVAILABLE = "flex-unavailable"
    FLEX_ERROR = "flex-error"
    NOT_ROUTED = "not-a-routed-endpoint"  # another path of the provider's API, forwarded
    SDK_RETRY = "sdk-retry"  # an SDK's retry (x-stainless-retry-count > 0) goes to standard
    BACKGROUND = "background-request"  # a Responses/Interactions background job, left as sent
    # adaptive flex (flexroute.routing.adaptive): flex skipped, or its budget shortened
    PREDICTED_UNAVAILABLE = "flex-predicted-unavailable"
    FLEX_SHORTENED = "flex-budget-shortened"


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    reason: Reason | None = None
    start_within: float | None = None
    tier: Tier | None = None  # tier to write upstream; None leaves the request's own
    tier_requested: str | None = None

    @property
    def billable(self) -> bool:
        return self.route is Route.FLEX


def decide(
    dialect: Dialect,
    facts: RequestFacts,
    prices: ModelPrices | None,
    *,
    header_start_within: str | None,
    default_start_within: float | None,
    proxy_only: Reason | None = None,
) -> Decision:
    """The route for a request; raises :class:`RequestRejected` for a 400.

    ``proxy_only`` is the reason a provider is never routed (Claude has no flex tier): the
    request passes through with ``start_within`` removed and its tier untouched."""
    start_within = _start_within(facts.start_within, header_start_within)
    requested = facts.tier
    if proxy_only is not None:
        return Decision(Route.PASSTHROUGH, proxy_only, start_within, None, requested)
    flex_wire = dialect.wire_tiers[Tier.FLEX]
    if start_within is None:
        if requested != flex_wire:
            return Decision(Route.PASSTHROUGH, Reason.NO_START_WITHIN, None, None, requested)
        if default_start_within is None:
            raise RequestRejected(
                400,
                f'service_tier "{flex_wire}" needs a start_within budget: add "start_within": '
                '"30s" to the request body or the header x-flex-start-within: 30s (or ask the '
                "operator to set FLEXROUTE_DEFAULT_START_WITHIN).",
                code="start_within_required",
                param="start_within",
            )
        start_within = default_start_within
    elif requested is not None and requested != flex_wire:
        raise RequestRejected(
            400,
            f'start_within asks for the flex tier but service_tier is "{requested}": remove '
            f'service_tier or set it to "{flex_wire}" to use flex, or remove start_within to '
            f'use "{requested}".',
            code="conflicting_service_tier",
            param="service_tier",
        )
    if prices is None:
        return Decision(Route.PASSTHROUGH, Reason.UNPRICED, start_within, Tier.STANDARD, requested)
    if not prices.flex_capable:
        return Decision(
            Route.PASSTHROUGH, Reason.NOT_FLEX_CAPABLE, start_within, Tier.STANDARD, requested
        )
    return Decision(Route.FLEX, None, start_within, Tier.FLEX, requested)


def _start_within(body_value: object, header_value: str | None) -> float | None:
    from_body = None if body_value is MISSING or body_value is None else body_value
    body_seconds = None if from_body is None else parse_start_within(from_body)
    header_seconds = (
        None
        if header_value is None
        else parse_start_within(header_value, field="x-flex-start-within")
    )
    if body_seconds is not None and header_seconds is not None and body_seconds != header_seconds:
        raise RequestRejected(
            400,
            f"start_within {from_body!r} in the body and x-flex-start-within {header_value!r} in "
            "the headers disagree: send only one of them.",
            code="conflicting_start_within",
            param="start_within",
        )
    return body_seconds if body_seconds is not None else header_seconds
