"""``flexroute.wrap``: flexroute inside the user's own openai, google-genai and anthropic clients.

::

    client = flexroute.wrap(openai.AsyncOpenAI(), start_within="30s")

returns a client of the same type whose calls go through the proxy's engine (flex first,
standard at the deadline, fee recorded in the same ledger) by way of an ``httpx2`` transport
(:mod:`flexroute.transport`): the SDK still builds, parses, retries and raises as before.

- ``start_within`` per client is the default; per call, ``extra_body={"start_within": ...}`` or
  ``extra_headers={"x-flex-start-within": ...}`` (genai: ``HttpOptions(headers=...)`` in the
  call's config) wins, and so does a call's own ``service_tier`` other than flex;
  ``"start_within": None`` in a call means passthrough.
- Upstream: a client on its provider's public URL uses ``settings`` (``FLEXROUTE_*_BASE_URL``);
  a client with its own base URL keeps it (see :func:`flexroute.transport.upstream_settings`).
- The SDK's retries never re-run flex: a retry goes straight to the standard tier (route
  ``passthrough``, reason ``sdk-retry``), and the user's retry settings apply as before.
  google-genai marks no retry, so with ``HttpOptions(retry_options=...)`` each of its retries
  runs its own flex attempt; its default is no retries.
- Each call's :class:`Outcome` goes to ``on_outcome`` and to every :func:`capture` block the
  call was made in, on the caller's side (the sync client's calling thread), once the ledger
  record is written: at the answer for whole bodies, at the end (or close) of a stream.
  The ``x-flexroute-*`` headers still come through ``with_raw_response``.
- The SDK's read timeout bounds the whole wait for an answer, flex wait included: keep it
  above ``start_within`` (the SDKs' defaults are minutes). On timeout the SDK raises its usual
  timeout error, and retries it (on the standard tier) if it is allowed to.
- Connections: flexroute's own pool (:func:`flexroute.transport.default_upstream`); settings of
  an ``http_client`` given to the original client are not carried over.
- ``close()`` on the wrapped client (genai: ``close()`` and ``aio.aclose()``) ends open streams
  and stops the sync transport's thread, the connection pool and the ledger writer.
- Refused at wrap time: a bad ``start_within`` (:class:`~flexroute.ConfigError`), an object
  that is not a supported client or a google-genai client set up for Vertex AI (``TypeError``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx2

from flexroute.config import Settings
from flexroute.duration import parse_start_within
from flexroute.errors import ConfigError, RequestRejected
from flexroute.ledger import LedgerRecord
from flexroute.providers import ANTHROPIC, GEMINI, OPENAI, Provider
from flexroute.transport import (
    FlexAsyncTransport,
    FlexOptions,
    FlexTransport,
    Listener,
    upstream_settings,
)
from flexroute.usage import Usage

if TYPE_CHECKING:
    from google.genai._api_client import BaseApiClient

__all__ = ["Outcome", "capture", "wrap"]

_C = TypeVar("_C")
SUPPORTED = (
    "openai.OpenAI, openai.AsyncOpenAI, google.genai.Client (or its .aio), "
    "anthropic.Anthropic, anthropic.AsyncAnthropic"
)
# (provider, async?, module, class): looked up in sys.modules, so wrap imports no SDK it need not.
_KINDS = (
    (OPENAI, False, "openai", "OpenAI"),
    (OPENAI, True, "openai", "AsyncOpenAI"),
    (ANTHROPIC, False, "anthropic", "Anthropic"),
    (ANTHROPIC, True, "anthropic", "AsyncAnthropic"),
    (GEMINI, False, "google.genai.client", "Client"),
    (GEMINI, True, "google.genai.client", "AsyncClient"),  # a Client's .aio
)
_captures: ContextVar[tuple[list[Outcome], ...]] = ContextVar("flexroute_captures", default=())


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call's outcome, from its ledger record: every call that reached a provider has one
    (a call flexroute refused itself, such as a bad ``start_within``, has none). Money is
    ``Decimal`` USD; ``cost`` and ``standard_cost`` are None for an unpriced model or an answer
    without usage."""

    request_id: str
    provider: str
    model: str | None
    route: str  # "flex" | "fallback" | "passthrough"
    reason: str | None  # why passthrough or fallback
    tier_served: str | None
    flex_wait_ms: int | None
    cost: Decimal | None
    standard_cost: Decimal | None
    saving: Decimal
    fee: Decimal
    usage: Usage | None
    status: str  # flexroute.ledger.Status: "ok", "client_closed", "upstream_error", …
    http_status: int

    @classmethod
    def from_record(cls, record: LedgerRecord) -> Outcome:
        return cls(
            request_id=record.request_id,
            provider=record.provider,
            model=record.model,
            route=record.route,
            reason=record.reason,
            tier_served=record.tier_served,
            flex_wait_ms=record.flex_wait_ms,
            cost=record.actual_cost,
            standard_cost=record.standard_cost,
            saving=record.saving,
            fee=record.fee,
            usage=record.usage,
            status=record.status,
            http_status=record.http_status,
        )


@contextmanager
def capture() -> Iterator[list[Outcome]]:
    """Collect the outcomes of wrapped calls made inside the block, in this context only.

    Context-local (``contextvars``): concurrent tasks and threads each see their own calls;
    blocks nest (an outer block sees the inner block's calls too). A stream's outcome arrives
    when the stream ends, even after the block exits.
    """
    outcomes: list[Outcome] = []
    token = _captures.set((*_captures.get(), outcomes))
    try:
        yield outcomes
    finally:
        _captures.reset(token)


def wrap(
    client: _C,
    *,
    start_within: str | float | None = None,
    settings: Settings | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> _C:
    """A new client of ``client``'s type whose calls go through flexroute.

    ``start_within`` (``"30s"``, ``"750ms"``, seconds) is the client's default budget; None
    leaves calls as they are (passthrough unless a call sets its own). ``settings`` defaults
    to ``Settings()`` (the ``FLEXROUTE_*`` environment). ``on_outcome`` hears every call's
    :class:`Outcome`. The original client is left untouched.
    """
    kind = _kind(client)
    if kind is None:
        raise TypeError(f"flexroute.wrap supports {SUPPORTED}; got {type(client).__qualname__}")
    provider, is_async = kind
    budget = _budget(start_within)
    listener = _listener(on_outcome)
    base = settings or Settings()

    def options(provider: Provider, base_url: str) -> FlexOptions:
        configured, prefix = upstream_settings(base, provider, base_url)
        return FlexOptions(configured, provider, prefix, budget, listener)

    vendor: Any = client
    if provider is GEMINI:
        rebuilt = _wrap_genai(vendor._api_client, options)
        return cast(_C, rebuilt.aio if is_async else rebuilt)
    flex = options(provider, str(vendor.base_url))
    # follow_redirects as the SDKs' own default clients do.
    http: httpx2.Client | httpx2.AsyncClient = (
        httpx2.AsyncClient(transport=FlexAsyncTransport(flex), follow_redirects=True)
        if is_async
        else httpx2.Client(transport=FlexTransport(flex), follow_redirects=True)
    )
    return cast(_C, vendor.copy(http_client=http))


def _kind(client: object) -> tuple[Provider, bool] | None:
    for provider, is_async, module, name in _KINDS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(client, getattr(loaded, name)):
            return provider, is_async
    return None


def _budget(start_within: str | float | None) -> float | None:
    if start_within is None:
        return None
    try:
        return parse_start_within(start_within)
    except RequestRejected as error:
        raise ConfigError(f"flexroute.wrap: {error.message}") from None


def _listener(on_outcome: Callable[[Outcome], None] | None) -> Callable[[], Listener | None]:
    """Called as each request starts, in the caller's context: who hears its outcome."""

    def at_request() -> Listener | None:
        sinks = _captures.get()
        if not sinks and on_outcome is None:
            return None

        def deliver(record: LedgerRecord) -> None:
            outcome = Outcome.from_record(record)
            for sink in sinks:
                sink.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        return deliver

    return at_request


def _wrap_genai(api: BaseApiClient, options: Callable[[Provider, str], FlexOptions]) -> Any:
    """A new ``genai.Client`` with the same key and options, on flexroute's transports.

    The transports go in ``client_args``/``async_client_args`` rather than as ready-made
    ``httpx_client``s: google-genai closes clients it built itself (``close()``,
    ``aio.aclose()``), so closing the wrapped client closes the transports too.
    """
    from google import genai

    if api.vertexai:
        raise TypeError(
            "flexroute.wrap supports google-genai clients for the Gemini Developer API; "
            "this one is set up for Vertex AI"
        )
    http = api._http_options
    flex = options(GEMINI, http.base_url or GEMINI.default_base_url)
    patched = http.model_copy(
        update={
            "client_args": {**(http.client_args or {}), "transport": FlexTransport(flex)},
            "async_client_args": {
                **(http.async_client_args or {}),
                "transport": FlexAsyncTransport(flex),
            },
            "httpx_client": None,
            "httpx_async_client": None,
            "aiohttp_client": None,
        }
    )
    return genai.Client(api_key=api.api_key, http_options=patched)
