"""Relaying a provider's event stream to the client, as it arrives.

Each event goes through the attempt's observer (usage, tier served, what the client may see);
the terminal event is held back until the ledger has the record, so a stream that ends cleanly
has been recorded. A stream that breaks or stalls ends with an in-band error event in the
dialect's format, never as a clean, truncated success; a client that leaves is recorded as
``client_closed``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import anyio

from flexroute import failures
from flexroute.context import RequestContext
from flexroute.dialects.sse import SSEDecoder
from flexroute.errors import UpstreamError
from flexroute.ledger.base import Status
from flexroute.routing.flex import Started
from flexroute.settle import cost_comment
from flexroute.upstream import UpstreamResponse

if TYPE_CHECKING:
    from flexroute.engine import Engine

__all__ = ["relay_stream"]


async def relay_stream(
    engine: Engine, ctx: RequestContext, response: UpstreamResponse, started: Started | None
) -> AsyncGenerator[bytes, None]:
    """Relay an SSE stream; the terminal event waits until the ledger has the record."""
    if started is None:
        observer = ctx.dialect.observer(
            wants_usage=ctx.wants_usage, assemble=False, headers=response.header_map
        )
        decoder, held, first = SSEDecoder(), [], b""
    else:
        observer, decoder, held = started.observer, started.decoder, started.held
        first = b"".join(started.sent)
    status = Status.CLIENT_CLOSED
    broken: UpstreamError | None = None
    try:
        if first:
            yield first
        async for chunk in response.aiter_bytes():
            out: list[bytes] = []
            for event in decoder.feed(chunk):
                data = observer.observe(event)
                if data is not None:
                    (held if observer.is_terminal(event) else out).append(data)
            if out:
                yield b"".join(out)
        status = Status.OK if observer.finished else Status.UPSTREAM_ERROR
    except UpstreamError as error:
        status, broken = failures.status_of(error), error
    except Exception:
        status = Status.PROXY_ERROR  # flexroute's own failure: never "the client left"
        raise
    finally:
        await response.aclose()
        if status in (Status.CLIENT_CLOSED, Status.PROXY_ERROR):
            with anyio.CancelScope(shield=True):
                await engine.record(ctx, observer.usage, observer.tier_served, status, 200)
    record = await engine.record(ctx, observer.usage, observer.tier_served, status, 200)
    if status is not Status.OK:
        yield ctx.dialect.stream_error(*failures.in_band(status, broken))
        return
    comment = cost_comment(record) if ctx.dialect.sse_comments else b""
    yield b"".join(held) + comment
