"""What a client is told when its provider fails it, decided in one place.

Before any byte reached the client, flexroute answers with an error of its own, which its SDK
may safely retry (``x-should-retry: true`` follows from the status): 502
``upstream_unreachable`` (no connection: the message names the provider, never the operator's
upstream URL, which goes to the server log), 504 ``upstream_timeout`` (no headers, no next
byte or no end within the bounds), 502 ``upstream_stream_broken`` (the answer broke off) or
502 ``upstream_malformed_response`` (hostile content: a status or header HTTP does not allow,
a body not of its content type, a field of the wrong type — the provider's content is never
relayed then). After bytes reached it, a stream ends with an in-band error event of the same
code. The record's status follows the same split: ``upstream_timeout`` for a bound passed,
``upstream_error`` for the rest; no connection, no record (nothing reached a provider).
"""

from __future__ import annotations

import logging

from flexroute.errors import RequestRejected, UpstreamError, UpstreamMalformed, UpstreamTimeout
from flexroute.ledger.base import Status
from flexroute.providers import Provider

__all__ = ["broken", "in_band", "status_of", "unreachable"]

log = logging.getLogger("flexroute.upstream")


def unreachable(provider: Provider, error: UpstreamError) -> RequestRejected:
    log.warning("%s upstream unreachable: %s", provider.name, error)
    return RequestRejected(
        502,
        f"flexroute could not reach the {provider.name} API; retry the request.",
        code="upstream_unreachable",
        error_type="api_error",
    )


def status_of(error: UpstreamError) -> Status:
    """The record's status for an answer the provider broke off or let stall."""
    return Status.UPSTREAM_TIMEOUT if isinstance(error, UpstreamTimeout) else Status.UPSTREAM_ERROR


def broken(error: UpstreamError) -> RequestRejected:
    """The provider's answer broke off, or stalled, before any of it reached the client."""
    if isinstance(error, UpstreamTimeout):
        return RequestRejected(
            504,
            f"The provider did not answer in time ({error}); retry the request.",
            code="upstream_timeout",
            error_type="api_error",
        )
    if isinstance(error, UpstreamMalformed):
        log.warning("malformed upstream answer: %s", error)
        return RequestRejected(
            502,
            f"The provider's answer is not what its API documents ({error}); retry the request.",
            code="upstream_malformed_response",
            error_type="api_error",
        )
    return RequestRejected(
        502,
        f"The provider's answer broke off before it finished ({error}); retry the request.",
        code="upstream_stream_broken",
        error_type="api_error",
    )


def in_band(status: Status, error: UpstreamError | None = None) -> tuple[str, str]:
    """Message and code of the error event that ends a stream broken (or stalled) midway."""
    if isinstance(error, UpstreamMalformed):
        log.warning("malformed upstream stream: %s", error)
        message = (
            f"The provider's stream is not what its API documents ({error}); the answer is "
            "incomplete. Retry the request."
        )
        return message, "upstream_malformed_response"
    stalled = status is Status.UPSTREAM_TIMEOUT
    message = (
        f"The provider's stream {'stalled' if stalled else 'broke off'} before it finished; "
        "the answer is incomplete. Retry the request."
    )
    return message, "upstream_timeout" if stalled else "upstream_stream_broken"


def attempt_outcome(error: UpstreamError) -> str:
    """The attempt log's word for an answer that failed after it reached the provider."""
    if isinstance(error, UpstreamTimeout):
        return "timed-out"
    return "malformed" if isinstance(error, UpstreamMalformed) else "broken"
