"""The flex attempt: cheap tier first, inside one deadline, committed at the first output.

``run_flex`` owns the request's deadline (``received_at + start_within``). Inside it, flex is
tried; a capacity refusal (429/503/``resource_unavailable``) is retried with tenacity, honouring
``Retry-After``, but a wait that would end at or past the deadline stops the retries at once
(waiting could not help). At the deadline the cancel scope cancels the attempt and its
connection is closed. Once the upstream produces its first output the attempt is *started*:
the deadline no longer applies and the caller relays it to the end — never a second call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from flexroute.dialects.base import Dialect, ErrorKind, Observer, dumps, retry_after_seconds
from flexroute.dialects.sse import SSEDecoder
from flexroute.errors import UpstreamError
from flexroute.routing.decide import Reason
from flexroute.upstream import UpstreamResponse


@dataclass(slots=True)
class Started:
    """A committed flex attempt, with what it produced before and at its first output."""

    response: UpstreamResponse
    observer: Observer
    decoder: SSEDecoder
    sent: list[bytes]  # client bytes, in order, up to and including the first output
    held: list[bytes]  # terminal events held back until the ledger has the record
    ended: bool  # the upstream body already ended


@dataclass(frozen=True, slots=True)
class ProviderError:
    """Flex failed for a reason waiting cannot fix: the client gets it as the provider sent it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class GaveUp:
    reason: Reason


@dataclass(slots=True)
class AttemptLog:
    """What each attempt did, in milliseconds since the request was received."""

    received_at: float
    entries: list[dict[str, object]] = field(default_factory=list)

    def add(self, tier: str, began: float, ended: float, outcome: str, status: int | None) -> None:
        self.entries.append(
            {
                "tier": tier,
                "began_ms": round((began - self.received_at) * 1000, 3),
                "ended_ms": round((ended - self.received_at) * 1000, 3),
                "outcome": outcome,
                "status": status,
            }
        )


class CapacityRefused(Exception):  # noqa: N818 -- a signal between attempt and retry policy
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class wait_retry_after(wait_base):  # noqa: N801 -- named like tenacity's own strategies
    """The provider's ``Retry-After`` when it gave one, else ``fallback``."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, CapacityRefused) and error.retry_after is not None:
            return error.retry_after
        return self.fallback(retry_state)


class stop_before_deadline(stop_base):  # noqa: N801 -- named like tenacity's own strategies
    """Stop when the next wait would reach the deadline: retries never extend it."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.deadline


DEFAULT_BACKOFF = wait_exponential_jitter(initial=0.25, max=4.0, jitter=0.25)


async def run_flex(
    send: Callable[[], Awaitable[UpstreamResponse]],
    dialect: Dialect,
    *,
    deadline: float,
    wants_usage: bool,
    assemble: bool,
    log: AttemptLog,
    clock: Callable[[], float] = anyio.current_time,
    backoff: wait_base = DEFAULT_BACKOFF,
) -> Started | ProviderError | GaveUp:
    """Run flex attempts until one starts, the deadline passes, or flex is unavailable."""
    result: Started | ProviderError | GaveUp = GaveUp(Reason.NOT_STARTED)
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(CapacityRefused),
        wait=wait_retry_after(backoff),
        stop=stop_before_deadline(deadline, clock),
        sleep=anyio.sleep,
        reraise=True,
    )
    with anyio.CancelScope(deadline=deadline):
        try:
            async for attempt in retrying:
                with attempt:
                    result = await _attempt(send, dialect, wants_usage, assemble, log, clock)
        except CapacityRefused:
            result = GaveUp(Reason.UNAVAILABLE)
        except UpstreamError:
            result = GaveUp(Reason.FLEX_ERROR)
    return result


async def _attempt(
    send: Callable[[], Awaitable[UpstreamResponse]],
    dialect: Dialect,
    wants_usage: bool,
    assemble: bool,
    log: AttemptLog,
    clock: Callable[[], float],
) -> Started | ProviderError:
    began = clock()
    outcome, status = "cancelled-at-deadline", None
    response: UpstreamResponse | None = None
    try:
        response = await send()
        status = response.status
        if response.status != 200:
            body = await response.read()
            if dialect.classify_error(response.status, body) is ErrorKind.CAPACITY:
                outcome = "refused"
                raise CapacityRefused(retry_after_seconds(response.header_map))
            if response.status >= 500:
                outcome = "error"
                raise UpstreamError(f"flex attempt failed with HTTP {response.status}")
            outcome = "client-error"
            return ProviderError(response.status, list(response.headers), body)
        started = await _until_started(response, dialect, wants_usage, assemble)
        failure = started.observer.failure
        capacity = ErrorKind.CAPACITY
        if (
            failure is not None
            and not started.observer.started
            and dialect.classify_error(200, dumps({"error": failure})) is capacity
        ):
            outcome = "refused"
            raise CapacityRefused(None)
        outcome = "started"
        return started
    except UpstreamError:
        outcome = "error" if outcome != "refused" else outcome
        raise
    finally:
        if outcome != "started" and response is not None:
            await response.aclose()
        log.add("flex", began, clock(), outcome, status)


async def _until_started(
    response: UpstreamResponse, dialect: Dialect, wants_usage: bool, assemble: bool
) -> Started:
    observer = dialect.observer(
        wants_usage=wants_usage, assemble=assemble, headers=response.header_map
    )
    decoder = SSEDecoder()
    sent: list[bytes] = []
    held: list[bytes] = []
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            out = observer.observe(event)
            if out is not None:
                (held if observer.is_terminal(event) else sent).append(out)
        if observer.started or observer.failure is not None:
            return Started(response, observer, decoder, sent, held, ended=False)
    return Started(response, observer, decoder, sent, held, ended=True)
