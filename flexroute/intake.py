"""From a call to what the engine knows about it: its body read, its route decided (pure).

The route follows SPEC §2 (:func:`flexroute.routing.decide.decide`), with the engine's own
exceptions: a background job passes through as sent, and an SDK's retry skips flex (SPEC §8).
The flex mode (``x-flex-mode``, else the operator's) is read here too, so a bad value is a 400
before anything is sent.
"""

from __future__ import annotations

from dataclasses import replace

from flexroute.call import Call
from flexroute.catalog import Catalog
from flexroute.config import Settings
from flexroute.context import RequestContext
from flexroute.dialects import Dialect
from flexroute.dialects.base import MISSING, request_object
from flexroute.providers import Provider
from flexroute.routing.adaptive import MODE_HEADER, FlexMode, flex_mode
from flexroute.routing.decide import Decision, Reason, Route, decide
from flexroute.routing.flex import AttemptLog
from flexroute.usage import Tier

__all__ = ["intake"]


def intake(
    call: Call,
    provider: Provider,
    dialect: Dialect,
    catalog: Catalog,
    settings: Settings,
    mode: FlexMode,
) -> RequestContext:
    """The context of ``call``; raises :class:`RequestRejected` for a 400. ``mode`` is the
    flex mode of a request without ``x-flex-mode``."""
    body = request_object(call.body)
    facts = dialect.read(body, call.path)
    prices = catalog.lookup(dialect.provider, facts.model) if facts.model else None
    # The SDK client's default budget yields to any start_within or non-flex tier in the call.
    header, default = call.start_within_header(), call.default_start_within
    if header is None and default is not None and facts.start_within is MISSING:
        header = str(default) if facts.tier in (None, dialect.wire_tiers[Tier.FLEX]) else None
    reason = None
    if body.get("background") is True and provider.proxy_only is None:
        # A background job answers at once with its id: nothing to wait for, nothing to
        # stream; it goes as the client wrote it (start_within removed), tier and all.
        decision = Decision(Route.PASSTHROUGH, Reason.BACKGROUND, tier_requested=facts.tier)
    else:
        decision = decide(
            dialect,
            facts,
            prices,
            header_start_within=header,
            default_start_within=settings.default_start_within,
            proxy_only=provider.proxy_only,
        )
    if decision.route is Route.FLEX and call.is_sdk_retry:
        # The SDK's first try spent the flex budget: its retry goes straight to standard.
        decision = replace(decision, route=Route.PASSTHROUGH, tier=Tier.STANDARD)
        reason = Reason.SDK_RETRY
    return RequestContext(
        call=call,
        provider=provider,
        dialect=dialect,
        body=body,
        model=facts.model,
        prices=prices,
        decision=decision,
        wants_stream=facts.stream,
        wants_usage=facts.wants_usage,
        log=AttemptLog(call.received_at),
        reason=reason,
        flex_mode=flex_mode(call.header(MODE_HEADER), mode),
    )
