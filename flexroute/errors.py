"""flexroute's one exception tree.

::

    FlexrouteError
     ├── ConfigError            a setting or command-line value is unusable
     ├── CatalogError           a pricing/*.toml entry is invalid (names file, model, field)
     ├── RequestRejected        flexroute refuses a client request itself (4xx it makes)
     │    └── (status, code, param, message) are shaped into the endpoint's dialect
     ├── UpstreamError          the provider could not be reached or broke off
     │    ├── UpstreamConnectError
     │    ├── UpstreamStreamBroken   the answer broke off (before its headers or midway)
     │    ├── UpstreamMalformed      the answer is not what its API documents
     │    └── UpstreamTimeout        no headers, no next byte, or no end within the bounds
     ├── LedgerError            the store could not write or read a record
     └── PaymentError           the payment processor could not be asked (outcome unknown)

Foreign exceptions (aiohttp, httpx2, sqlite3) are translated into this tree at exactly one
seam each: ``flexroute.upstream`` for HTTP clients, ``flexroute.ledger`` for storage,
``flexroute.billing.stripe_processor`` for Stripe.
"""

from __future__ import annotations


class FlexrouteError(Exception):
    """Base of every error flexroute raises on purpose."""


class ConfigError(FlexrouteError):
    """A setting, a command-line value or a config file is unusable."""


class CatalogError(FlexrouteError):
    """An entry in the price catalog is invalid."""


class RequestRejected(FlexrouteError):  # noqa: N818 -- names what happened to the request
    """flexroute answers the client with an error of its own making.

    ``code`` is a stable machine-readable string, ``param`` the request field at fault (if any),
    ``message`` a sentence naming the value and the fix. Proxy and SDK wrapper shape it into the
    endpoint's dialect so the client SDK raises its usual exception.

    ``retryable`` becomes ``x-should-retry``: true where a retry is safe and may succeed
    (nothing billed reached the client: a rate limit, an unreachable or broken upstream),
    false for a request that would fail the same way again. Default: 429 and 5xx.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = status == 429 or status >= 500 if retryable is None else retryable
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type
        self.headers = headers or {}
        self.extra = extra or {}


class UpstreamError(FlexrouteError):
    """The provider could not be reached, or its answer broke off."""


class UpstreamConnectError(UpstreamError):
    """No connection to the provider could be made (or it timed out)."""


class UpstreamStreamBroken(UpstreamError):  # noqa: N818 -- reads as the condition it is
    """The provider's stream ended or failed before its terminal event."""


class UpstreamMalformed(UpstreamError):  # noqa: N818 -- reads as the condition it is
    """The provider's answer is not what its API documents: a status or header HTTP does not
    allow, a body that is not what its content type says, a field of the wrong type. Raised
    where the content is read (``flexroute.upstream`` for the status and headers, the
    dialects for bodies and events); the client gets flexroute's error, never the content."""


class UpstreamTimeout(UpstreamError):  # noqa: N818 -- reads as the condition it is
    """The provider sent no response headers, no next byte, or not the whole answer within
    the configured bound (``FLEXROUTE_UPSTREAM_HEADERS_TIMEOUT``, ``…_IDLE_TIMEOUT``,
    ``…_TOTAL_TIMEOUT``)."""


class LedgerError(FlexrouteError):
    """The ledger store failed to write or read."""


class PaymentError(FlexrouteError):
    """The payment processor could not be reached or refused the request itself (not a
    declined card): the charge's outcome is unknown and it is retried with the same key."""
