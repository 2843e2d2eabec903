"""Every other path of a provider's API (embeddings, files, models, batches…): forwarded.

The request goes upstream as the client sent it — its path still percent-encoded, its
compressed bytes and all — with only ``start_within`` (body field and header) taken out. The
answer is relayed byte for byte and recorded without usage or fee once it has been relayed.
A body that breaks off is never passed off as complete: an event stream ends with an in-band
error event, anything else aborts the client's connection (the proxy leaves the response
unfinished; the wrapper raises the SDK's connection error).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import anyio

from flexroute import failures
from flexroute.call import Call, Reply
from flexroute.context import RequestContext
from flexroute.dialects.base import START_WITHIN_KEYS, dumps, loads_object
from flexroute.errors import UpstreamConnectError, UpstreamError
from flexroute.ledger.base import Status
from flexroute.providers import Provider
from flexroute.routing.decide import Decision, Reason, Route
from flexroute.routing.flex import AttemptLog
from flexroute.upstream import HOP_BY_HOP, UpstreamRequest, UpstreamResponse, is_event_stream

if TYPE_CHECKING:
    from flexroute.engine import Engine

__all__ = ["Forwarder"]

# Forwarded requests keep their accept-encoding: their bytes are relayed, never parsed.
_DROP_FORWARD = HOP_BY_HOP | {"x-flex-start-within"}


class Forwarder:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def forward(self, call: Call, provider: Provider) -> Reply:
        engine = self._engine
        body = loads_object(call.body) if call.body[:1] == b"{" else None
        model = body.get("model") if body is not None else None
        ctx = RequestContext(
            call=call,
            provider=provider,
            dialect=provider.error_dialect,
            body=body or {},
            model=model if isinstance(model, str) else None,
            prices=None,
            decision=Decision(Route.PASSTHROUGH, Reason.NOT_ROUTED),
            wants_stream=False,
            wants_usage=False,
            log=AttemptLog(call.received_at),
            reason=Reason.NOT_ROUTED,
        )
        sent = call.body
        if body is not None and any(key in body for key in START_WITHIN_KEYS):
            sent = dumps({k: v for k, v in body.items() if k not in START_WITHIN_KEYS})
        headers = [(k, v) for k, v in call.headers if k not in _DROP_FORWARD]
        target = call.upstream_path + (f"?{call.query}" if call.query else "")
        url = provider.upstream_url(engine.base_url(provider), target)
        began = engine.clock()
        try:
            with ctx.log.left_during("forward", began, engine.clock):
                request = UpstreamRequest(call.method, url, headers, sent)
                response = await engine.upstream.send(request)
        except anyio.get_cancelled_exc_class():  # the client left before the answer came
            with anyio.CancelScope(shield=True):
                await engine.record(ctx, None, None, Status.CLIENT_CLOSED, 499)
            raise
        except UpstreamConnectError as error:
            ctx.log.add("forward", began, engine.clock(), "unreachable", None)
            return engine.reject(
                ctx.dialect, failures.unreachable(provider, error), call.request_id
            )
        except UpstreamError as error:  # it reached the provider: timed out, cut, malformed
            ctx.log.add("forward", began, engine.clock(), "failed", None)
            rejected = failures.broken(error)
            await engine.record(ctx, None, None, failures.status_of(error), rejected.status)
            return engine.reject(ctx.dialect, rejected, call.request_id)
        ctx.log.add("forward", began, engine.clock(), "answered", response.status)
        out = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP]
        out += [
            ("x-flexroute-request-id", call.request_id),
            ("x-flexroute-route", str(Route.PASSTHROUGH)),
            ("x-flexroute-reason", str(Reason.NOT_ROUTED)),
        ]
        return Reply(response.status, out, stream=self._relay(ctx, response))

    async def _relay(
        self, ctx: RequestContext, response: UpstreamResponse
    ) -> AsyncGenerator[bytes, None]:
        status = Status.CLIENT_CLOSED
        broken: UpstreamError | None = None
        events = is_event_stream(response)
        held = b""  # an event stream's unfinished event: sent once it ends, dropped if cut
        try:
            async for chunk in response.aiter_bytes():
                if events:
                    chunk, held = _whole_events(held + chunk)
                if chunk:
                    yield chunk
            if held:
                yield held
            status = Status.OK if response.status < 400 else Status.UPSTREAM_ERROR
        except UpstreamError as error:
            status, broken = failures.status_of(error), error
        finally:
            await response.aclose()
            with anyio.CancelScope(shield=True):
                await self._engine.record(ctx, None, None, status, response.status)
        if broken is not None:
            if events:  # after the last whole event: the client's SSE parser reads the error
                yield ctx.dialect.stream_error(*failures.in_band(status, broken))
                return
            raise broken  # the relay aborts the client's connection: never a clean, cut body


def _whole_events(data: bytes) -> tuple[bytes, bytes]:
    """``data`` split after its last blank line (an event's end): what can go, what waits."""
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := data.rfind(sep)) >= 0]
    end = max(ends, default=0)
    return data[:end], data[end:]
