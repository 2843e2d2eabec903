"""The flex attempt: cheap tier first, inside one deadline, committed at the first output.

``run_flex`` owns the request's deadline (``received_at + start_within``). Inside it, flex is
tried; a capacity refusal is retried with tenacity, honouring ``Retry-After``, but a wait that
would end at or past the deadline stops the retries at once (waiting could not help). A
refusal is an HTTP 429/503 or ``resource_unavailable`` — or the same said *inside* a 200
stream before its first output: an ``error`` event or a Responses ``response.failed`` whose
code is ``flex_unavailable`` or ``resource_unavailable``. At the deadline the cancel scope
cancels the attempt and its connection is closed. Once the upstream produces its first output
the attempt is *started*: the deadline no longer applies and the caller relays it to the end —
never a second call.

An attempt that ends before its first output — an empty 200, a 200 that is not an event
stream (say an HTML page from a load balancer), a stream that closes or breaks first — failed
like a 5xx: nothing has reached the client, so the request falls back at once.

**Streaming refused.** flexroute streams the flex attempt of a non-streaming client, to see
flex start. OpenAI refuses streaming on some models to unverified organisations (400,
``param: "stream"``, ``code: "unsupported_value"``). For a non-streaming client the attempt is
then made again at once without streaming — *started* then means the whole answer arrived
inside the budget — and the refusal is remembered per (provider, model) for an hour
(:mod:`flexroute.routing.streaming`), so later requests skip the refused round trip. A
streaming client gets the 400 as the provider sent it, as it would directly.

**The attempt log.** Each flex entry says whether the attempt streamed (``stream``) and whether
the provider may bill it (``billed``): ``true`` for the started attempt (priced from its
usage); ``false`` for a refusal, an error, or an attempt cancelled before the provider accepted
it (SPEC §3 takes those as unbilled); ``"unknown"`` for an attempt cancelled at the deadline
after the provider accepted it (HTTP 200 received, stream open) or while an unstreamed attempt
was being answered — a reasoning model may have been thinking, billed, with nothing to show —
with its ``elapsed_ms``. ``why`` says what made an attempt go unstreamed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from flexroute.clock import now
from flexroute.dialects.base import (
    Dialect,
    ErrorKind,
    Observer,
    dumps,
    loads_object,
    retry_after_seconds,
)
from flexroute.dialects.sse import SSEDecoder
from flexroute.errors import UpstreamError
from flexroute.routing.decide import Reason
from flexroute.routing.streaming import ModelStreaming
from flexroute.upstream import UpstreamResponse

Send = Callable[[bool], Awaitable[UpstreamResponse]]  # send(stream) -> the response, headers read
# watch(outcome, seconds since the attempt was sent, Retry-After): each flex attempt as it ends,
# for the availability model (flexroute.routing.advisor) — and "accepted" when the provider
# answers 200 and the attempt goes on waiting for its first output
Watch = Callable[[str, float, float | None], None]
# hold(stop): a context for the whole wait in which the caller may call stop() to end it now
# (adaptive flex: flex became predicted down for this request's budget meanwhile)
Hold = Callable[[Callable[[], None]], AbstractContextManager[None]]
UNKNOWN = "unknown"  # ``billed`` of an attempt the provider may or may not bill


@dataclass(slots=True)
class Started:
    """A committed flex attempt, with what it produced before and at its first output."""

    response: UpstreamResponse
    observer: Observer
    decoder: SSEDecoder
    sent: list[bytes]  # client bytes, in order, up to and including the first output
    held: list[bytes]  # terminal events held back until the ledger has the record
    ended: bool  # the upstream body already ended
    whole: bytes | None = None  # an unstreamed attempt's whole JSON body (streaming refused)
    received: int = 0  # body bytes read so far


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

    def add(
        self,
        tier: str,
        began: float,
        ended: float,
        outcome: str,
        status: int | None,
        **facts: object,
    ) -> None:
        """One entry; ``facts`` (e.g. ``stream``, ``billed``, ``why``) are added as given."""
        self.entries.append(
            {
                "tier": tier,
                "began_ms": round((began - self.received_at) * 1000, 3),
                "ended_ms": round((ended - self.received_at) * 1000, 3),
                "outcome": outcome,
                "status": status,
                **facts,
            }
        )

    @contextmanager
    def left_during(
        self, tier: str, began: float, clock: Callable[[], float], status: int | None = None
    ) -> Iterator[None]:
        """An attempt the client's leaving cancels inside this block is logged
        ``client-closed``, so the request that reached a provider gets its record."""
        try:
            yield
        except anyio.get_cancelled_exc_class():
            self.add(tier, began, clock(), "client-closed", status)
            raise


class _Retry(Exception):  # noqa: N818 -- a signal between attempt and retry policy
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class CapacityRefused(_Retry):
    """Flex has no capacity now: retry after ``retry_after`` (or the backoff)."""


class StreamingRefused(_Retry):
    """The provider refused to stream this model: go again at once, unstreamed."""

    def __init__(self) -> None:
        super().__init__(0.0)


class wait_retry_after(wait_base):  # noqa: N801 -- named like tenacity's own strategies
    """The provider's ``Retry-After`` when it gave one, else ``fallback``."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _Retry) and error.retry_after is not None:
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


@dataclass(slots=True)
class _Mode:
    """Whether the next attempt streams, and why not when it does not."""

    stream: bool
    why: str | None
    streaming: ModelStreaming | None  # None: a streaming client, or nothing to remember by
    deadline: float = float("inf")  # a cancellation before it is the client's, not the budget's
    watch: Watch | None = None
    stopped: bool = False  # the hold stopped the wait: flex predicted down meanwhile


async def run_flex(
    send: Send,
    dialect: Dialect,
    *,
    deadline: float,
    wants_usage: bool,
    assemble: bool,
    log: AttemptLog,
    clock: Callable[[], float] = now,
    backoff: wait_base = DEFAULT_BACKOFF,
    streaming: ModelStreaming | None = None,
    watch: Watch | None = None,
    hold: Hold | None = None,
) -> Started | ProviderError | GaveUp:
    """Run flex attempts until one starts, the deadline passes, or flex is unavailable.

    ``assemble`` is True for a non-streaming client; only then may an attempt go unstreamed,
    as ``streaming`` (this model's memory of refusals) says or a refusal teaches. ``hold``
    (adaptive flex) may stop the wait early: the attempt is cut as at the deadline and the
    request gives up with ``flex-predicted-unavailable``."""
    streaming = streaming if assemble else None
    remembered = streaming is not None and not streaming.allowed
    why = "stream-refused-earlier" if remembered else None
    mode = _Mode(not remembered, why, streaming, deadline, watch)
    result: Started | ProviderError | GaveUp = GaveUp(Reason.NOT_STARTED)
    scope = anyio.CancelScope(deadline=deadline)

    def stop() -> None:  # the deadline moves to now: what waits is cut as at a deadline
        moment = clock()
        if moment < mode.deadline:  # (at the deadline itself there is nothing to stop)
            mode.deadline, mode.stopped = moment, True
            scope.cancel()

    with scope, nullcontext() if hold is None else hold(stop):
        try:
            # The first attempt outside tenacity: its loop costs ~30 µs a request even when
            # nothing is retried. A refusal is handed to it as attempt 1's outcome, so the
            # waits, the stop and the numbering are tenacity's exactly as before.
            refused: _Retry | None = None
            try:
                result = await _attempt(send, dialect, wants_usage, assemble, log, clock, mode)
            except _Retry as error:
                refused = error
            if refused is not None:
                retrying = AsyncRetrying(
                    retry=retry_if_exception_type(_Retry),
                    wait=wait_retry_after(backoff),
                    stop=stop_before_deadline(deadline, clock),
                    sleep=anyio.sleep,
                    reraise=True,
                )
                async for attempt in retrying:
                    with attempt:
                        if refused is not None:  # attempt 1: the outcome it already had
                            first, refused = refused, None
                            raise first
                        result = await _attempt(
                            send, dialect, wants_usage, assemble, log, clock, mode
                        )
        except CapacityRefused:
            result = GaveUp(Reason.UNAVAILABLE)
        except StreamingRefused:  # refused at the very deadline: no time left to ask again
            result = GaveUp(Reason.NOT_STARTED)
        except UpstreamError:
            result = GaveUp(Reason.FLEX_ERROR)
    if mode.stopped and isinstance(result, GaveUp) and result.reason is not Reason.FLEX_ERROR:
        result = GaveUp(Reason.PREDICTED_UNAVAILABLE)
    return result


async def _attempt(
    send: Send,
    dialect: Dialect,
    wants_usage: bool,
    assemble: bool,
    log: AttemptLog,
    clock: Callable[[], float],
    mode: _Mode,
) -> Started | ProviderError:
    began, stream, why = clock(), mode.stream, mode.why
    outcome, status, retry_after = "cancelled-at-deadline", None, None
    response: UpstreamResponse | None = None
    try:
        response = await send(stream)
        status = response.status
        if status == 200 and mode.watch is not None:
            mode.watch("accepted", clock() - began, None)
        if response.status != 200:
            body = await response.read()
            kind = dialect.classify_error(response.status, body)
            if kind is ErrorKind.CAPACITY:
                outcome, retry_after = "refused", retry_after_seconds(response.header_map)
                raise CapacityRefused(retry_after)
            if kind is ErrorKind.STREAM_REFUSED and stream and mode.streaming is not None:
                outcome = "stream-refused"
                mode.streaming.refuse()
                mode.stream, mode.why = False, "stream-refused"
                raise StreamingRefused
            if response.status >= 500:
                outcome = "error"
                raise UpstreamError(f"flex attempt failed with HTTP {response.status}")
            outcome = "client-error"
            return ProviderError(response.status, list(response.headers), body)
        if not stream:
            started = await _whole(response, dialect, wants_usage)
            if loads_object(started.whole or b"") is None:
                outcome = "empty-body" if not started.whole else "not-json"
                raise UpstreamError(f"flex attempt answered 200 with {outcome}")
            outcome = "started"
            return started
        started = await _until_started(response, dialect, wants_usage, assemble)
        observer = started.observer
        if not observer.started:
            failure = observer.failure
            if failure is not None:
                if dialect.classify_error(200, dumps({"error": failure})) is ErrorKind.CAPACITY:
                    outcome = "refused"
                    raise CapacityRefused(None)
            else:  # the body ended with no output and no error: nothing to relay
                outcome = _before_output(response, started)
                raise UpstreamError(f"flex attempt answered 200 with {outcome}")
        outcome = "started"
        return started
    except UpstreamError:
        if outcome == "cancelled-at-deadline":
            outcome = "broken" if status == 200 else "error"
        raise
    finally:
        if outcome != "started" and response is not None:
            await response.aclose()
        ended = clock()
        if outcome == "cancelled-at-deadline" and ended < mode.deadline:
            outcome = "client-closed"  # cancelled before the deadline: the client went away
        facts = _facts(outcome, status, stream, why, ended - began)
        log.add("flex", began, ended, outcome, status, **facts)
        if mode.watch is not None:
            mode.watch(outcome, ended - began, retry_after)


def _facts(
    outcome: str, status: int | None, stream: bool, why: str | None, elapsed: float
) -> dict[str, object]:
    """``stream``, ``billed`` (and ``elapsed_ms`` when unknown), ``why`` for one flex entry."""
    facts: dict[str, object] = {"stream": stream}
    if outcome == "started":
        facts["billed"] = True
    elif outcome in ("cancelled-at-deadline", "client-closed") and (status == 200 or not stream):
        facts["billed"] = UNKNOWN  # the provider had accepted it: it may have been serving
        facts["elapsed_ms"] = round(elapsed * 1000, 3)
    else:
        facts["billed"] = False
    if why is not None:
        facts["why"] = why
    return facts


def _before_output(response: UpstreamResponse, started: Started) -> str:
    """How a 200 ended before its first output: no body, a body that is not an event stream,
    or an event stream that closed first."""
    if started.received == 0:
        return "empty-body"
    content_type = response.header_map.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        return "not-a-stream"
    return "ended-before-output"


async def _whole(response: UpstreamResponse, dialect: Dialect, wants_usage: bool) -> Started:
    """An unstreamed attempt: the whole answer, read inside the deadline."""
    body = await response.read()
    observer = dialect.observer(
        wants_usage=wants_usage, assemble=False, headers=response.header_map
    )
    return Started(
        response, observer, SSEDecoder(), [], [], ended=True, whole=body, received=len(body)
    )


async def _until_started(
    response: UpstreamResponse, dialect: Dialect, wants_usage: bool, assemble: bool
) -> Started:
    observer = dialect.observer(
        wants_usage=wants_usage, assemble=assemble, headers=response.header_map
    )
    decoder = SSEDecoder()
    sent: list[bytes] = []
    held: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        for event in decoder.feed(chunk):
            out = observer.observe(event)
            if out is not None:
                (held if observer.is_terminal(event) else sent).append(out)
        if observer.started or observer.failure is not None:
            return Started(response, observer, decoder, sent, held, False, received=received)
    return Started(response, observer, decoder, sent, held, True, received=received)
