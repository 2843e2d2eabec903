"""httpx2 transports that answer an SDK's requests through the engine: the wrapper's seam.

A vendor SDK builds an ``httpx2.Request`` as usual; :class:`FlexAsyncTransport` (async
clients) or :class:`FlexTransport` (sync clients) turns it into a :class:`~flexroute.engine.Call`,
runs :meth:`Engine.handle <flexroute.engine.Engine.handle>` and hands back an
``httpx2.Response`` whose stream yields the engine's bytes, so the SDK parses and raises as it
always does. Routing, pricing, the ledger and the ``x-flexroute-*`` headers are the engine's.

Where requests go: the path and query of the SDK's URL, after the client's own base-URL prefix
(:func:`upstream_settings`), are appended to the provider's upstream base URL, over the
engine's own connection pool (:func:`default_upstream`): settings of an ``http_client`` the
user gave the SDK (certificates, mounts) are not carried over.

Sync clients run the engine on one event-loop thread owned by the transport (an anyio blocking
portal, on uvloop where installed), started at the first request and stopped by
:meth:`FlexTransport.close`; a streamed body is pulled through the portal chunk by chunk.

The SDK's request timeout (``read``) bounds the wait for the answer's headers, flex wait
included, and then each chunk; it raises ``httpx2.ReadTimeout`` like a socket would.
An SDK retry (``x-stainless-retry-count`` above 0) skips flex: the first try spent the budget.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
import anyio.from_thread
import httpx2

from flexroute.catalog import Catalog
from flexroute.config import Settings
from flexroute.engine import Call, Engine, Reply, new_request_id
from flexroute.errors import RequestRejected, UpstreamError
from flexroute.ledger import LedgerRecord
from flexroute.loop_thread import LoopThread
from flexroute.providers import Provider, api_root
from flexroute.runtime import Runtime, build_runtime
from flexroute.upstream import AiohttpUpstream, Bounds, Httpx2Upstream, Upstream

__all__ = [
    "FlexAsyncTransport",
    "FlexOptions",
    "FlexTransport",
    "Listener",
    "default_upstream",
    "upstream_settings",
]

log = logging.getLogger("flexroute.sdk")

# Called with a call's ledger record once it is written.
Listener = Callable[[LedgerRecord], None]


def upstream_settings(
    settings: Settings, provider: Provider, base_url: str
) -> tuple[Settings, str]:
    """``settings`` with ``provider``'s upstream set from an SDK client's ``base_url``, and the
    path prefix to strip from the client's request paths.

    A client on its provider's public URL keeps the settings' base (``FLEXROUTE_*_BASE_URL``,
    default the same public URL); a client pointed elsewhere (a gateway, Azure's
    ``…/openai/v1``, a local server's ``…/v1``) keeps going there. The API version (``/v1``,
    ``/v1beta``) belongs to the request path, as in the proxy
    (:func:`~flexroute.providers.api_root`).
    """
    root = api_root(base_url)
    _, _, rest = root.partition("://")
    _, slash, path = rest.partition("/")
    prefix = slash + path
    if root == api_root(provider.default_base_url):
        return settings, prefix
    return settings.model_copy(update={provider.base_url_setting: root}), prefix


def default_upstream(bounds: Bounds | None = None) -> Upstream:
    """aiohttp, which adds about 0.7 ms less per call than httpx2 (benchmarks/sdk_overhead.py),
    unless the environment names an HTTP proxy: httpx2 honours ``HTTPS_PROXY``/``NO_PROXY`` as
    the SDKs' own clients do, aiohttp does not."""
    return Httpx2Upstream(bounds) if urllib.request.getproxies() else AiohttpUpstream(bounds)


@dataclass(frozen=True, slots=True)
class FlexOptions:
    """What a transport needs: where to send, the client's budget and who hears outcomes."""

    settings: Settings
    provider: Provider
    prefix: str = ""  # the client's base-URL path, stripped from request paths
    start_within: float | None = None  # the client's default budget (None: passthrough)
    # Called in the caller's context when a request starts; returns who hears its record.
    listener: Callable[[], Listener | None] = lambda: None
    catalog: Catalog | None = None
    # Called on the engine's loop with the settings' bounds (FLEXROUTE_UPSTREAM_*_TIMEOUT).
    upstream: Callable[[Bounds], Upstream] = default_upstream


@dataclass(slots=True)
class _Pending:
    listener: Listener
    record: LedgerRecord | None = None


@dataclass(slots=True)
class _Core:
    """What both transports share: request → Call, the engine, and outcome delivery."""

    options: FlexOptions
    pending: dict[str, _Pending] = field(default_factory=dict)

    def start(self) -> str:
        """On the caller's side (its thread and context): a request id, and who hears it."""
        request_id = new_request_id()
        listener = self.options.listener()
        if listener is not None:
            self.pending[request_id] = _Pending(listener)
        return request_id

    def call(self, request: httpx2.Request, body: bytes, request_id: str) -> Call:
        """On the engine's loop (the receipt time is read from its clock)."""
        path = request.url.path
        raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        prefix = self.options.prefix
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix) :]
        if prefix and raw_path.startswith(prefix + "/"):
            raw_path = raw_path[len(prefix) :]
        headers = [
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers.raw
        ]
        return Call(
            method=request.method,
            path=path,
            query=request.url.query.decode("latin-1"),
            headers=headers,
            body=body,
            request_id=request_id,
            default_start_within=self.options.start_within,
            raw_path=raw_path,
        )

    def runtime(self) -> Runtime:
        """The engine and its resources, built by the one composition root (so a wrapped
        client gets the billing gate's 402 as the proxy's clients do)."""
        options = self.options
        return build_runtime(
            options.settings,
            catalog=options.catalog,
            upstream=options.upstream(Bounds.from_settings(options.settings)),
            on_record=self._on_record,
            trace_kind="internal",  # the caller's current span, if any, is the parent
        )

    async def handle(self, engine: Engine, call: Call, read_timeout: float | None) -> Reply:
        try:
            with anyio.fail_after(read_timeout):
                reply = await engine.handle(call, self.options.provider)
        except RequestRejected as error:
            return engine.reject(self.options.provider.error_dialect, error, call.request_id)
        await reply.delivered(True)  # a whole answer is in the caller's process: received
        return reply

    def _on_record(self, record: LedgerRecord) -> None:
        pending = self.pending.get(record.request_id)
        if pending is not None:
            pending.record = record

    @contextmanager
    def answering(self, request: httpx2.Request, request_id: str) -> Iterator[None]:
        """Around getting the engine's reply: a failure still delivers the outcome, and the
        read timeout surfaces as ``httpx2.ReadTimeout``, as a socket's would."""
        try:
            yield
        except TimeoutError:
            self.finish(request_id)
            raise _timed_out(request) from None
        except BaseException:
            self.finish(request_id)
            raise

    def whole(self, request_id: str, reply: Reply) -> httpx2.Response:
        """A reply with its whole body: the call is over."""
        self.finish(request_id)
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body)

    def finish(self, request_id: str) -> None:
        """Deliver the call's outcome, if it has one, on the caller's side of the transport."""
        pending = self.pending.pop(request_id, None)
        if pending is None or pending.record is None:
            return
        try:
            pending.listener(pending.record)
        except Exception:  # a listener's bug must not fail (and so retry) the call
            log.exception("flexroute: an outcome listener raised")


def _read_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    value = timeout.get("read")
    return None if value is None else float(value)


def _timed_out(request: httpx2.Request) -> httpx2.ReadTimeout:
    return httpx2.ReadTimeout("flexroute: no answer within the read timeout", request=request)


async def _next_chunk(stream: AsyncGenerator[bytes, None], wait: float | None) -> bytes | None:
    with anyio.fail_after(wait):
        return await anext(stream, None)


def _cut(request: httpx2.Request, error: UpstreamError) -> httpx2.RemoteProtocolError:
    """A forwarded body that broke off reaches the SDK as a cut connection would."""
    return httpx2.RemoteProtocolError(f"flexroute: {error}", request=request)


# -- async clients --------------------------------------------------------------------------


class FlexAsyncTransport(httpx2.AsyncBaseTransport):
    """For async SDK clients: the engine runs in the caller's task, on the caller's loop.

    ``aclose()`` ends open streams and closes the upstream pool and the ledger.
    """

    def __init__(self, options: FlexOptions) -> None:
        self._core = _Core(options)
        self._runtime: Runtime | None = None
        self._streams: set[_AsyncReplyStream] = set()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        request_id = self._core.start()
        call = self._core.call(request, body, request_id)
        if self._runtime is None:
            self._runtime = self._core.runtime()
        timeout = _read_timeout(request)
        with self._core.answering(request, request_id):
            reply = await self._core.handle(self._runtime.engine, call, timeout)
        if reply.stream is None:
            return self._core.whole(request_id, reply)
        stream = _AsyncReplyStream(self, request_id, reply.stream, request, timeout)
        self._streams.add(stream)
        return httpx2.Response(reply.status, headers=reply.headers, stream=stream)

    async def aclose(self) -> None:
        for stream in list(self._streams):
            await stream.aclose()
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            await runtime.aclose()


class _AsyncReplyStream(httpx2.AsyncByteStream):
    def __init__(
        self,
        transport: FlexAsyncTransport,
        request_id: str,
        stream: AsyncGenerator[bytes, None],
        request: httpx2.Request,
        timeout: float | None,
    ) -> None:
        self._transport, self._id, self._stream = transport, request_id, stream
        self._request, self._timeout = request, timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await _next_chunk(self._stream, self._timeout)
            except TimeoutError:
                raise _timed_out(self._request) from None
            except UpstreamError as error:
                raise _cut(self._request, error) from None
            if chunk is None:
                break
            yield chunk
        self._transport._core.finish(self._id)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport._streams.discard(self)
        try:
            await self._stream.aclose()
        finally:
            self._transport._core.finish(self._id)


# -- sync clients ---------------------------------------------------------------------------


class FlexTransport(httpx2.BaseTransport):
    """For sync SDK clients: the engine runs on the transport's own event-loop thread.

    Safe to share between threads; ``close()`` ends open streams, closes the upstream pool and
    the ledger, and joins the thread.
    """

    def __init__(self, options: FlexOptions) -> None:
        self._core = _Core(options)
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._runtime: Runtime | None = None
        self._streams: set[_SyncReplyStream] = set()
        self._closed = False

    def _get_portal(self) -> anyio.from_thread.BlockingPortal:
        with self._lock:
            if self._closed:
                raise RuntimeError("this flexroute transport is closed")
            if self._portal is None:
                self._loop = LoopThread(self._shut)
                self._portal = self._loop.portal
            return self._portal

    async def _handle(
        self, request: httpx2.Request, body: bytes, request_id: str, read_timeout: float | None
    ) -> Reply:
        if self._runtime is None:
            self._runtime = self._core.runtime()
        call = self._core.call(request, body, request_id)
        return await self._core.handle(self._runtime.engine, call, read_timeout)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        portal = self._get_portal()
        request_id = self._core.start()
        timeout = _read_timeout(request)
        with self._core.answering(request, request_id):
            reply = portal.call(self._handle, request, body, request_id, timeout)
        if reply.stream is None:
            return self._core.whole(request_id, reply)
        stream = _SyncReplyStream(self, request_id, reply.stream, request, timeout)
        self._streams.add(stream)
        return httpx2.Response(reply.status, headers=reply.headers, stream=stream)

    def close(self) -> None:
        self._shut(None)

    def _shut(self, wait: float | None) -> None:
        """What ``close()`` does; at interpreter exit (``wait`` set) each step is bounded and
        calls still in flight are cancelled (see :mod:`flexroute.loop_thread`)."""
        with self._lock:
            self._closed = True
            loop, self._loop, self._portal = self._loop, None, None
        if loop is None or not loop.usable:
            return
        try:
            if wait is None:
                for stream in list(self._streams):
                    stream.close()
            runtime, self._runtime = self._runtime, None
            if runtime is not None:
                loop.run(runtime.aclose, wait)
        except TimeoutError:
            pass  # exiting: what did not close in time, the process's end closes
        finally:
            loop.stop(cancel=wait is not None, timeout=wait or 10.0)


class _SyncReplyStream(httpx2.SyncByteStream):
    def __init__(
        self,
        transport: FlexTransport,
        request_id: str,
        stream: AsyncGenerator[bytes, None],
        request: httpx2.Request,
        timeout: float | None,
    ) -> None:
        assert transport._portal is not None
        self._transport, self._portal = transport, transport._portal
        self._id, self._stream = request_id, stream
        self._request, self._timeout = request, timeout
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._portal.call(_next_chunk, self._stream, self._timeout)
            except TimeoutError:
                raise _timed_out(self._request) from None
            except UpstreamError as error:
                raise _cut(self._request, error) from None
            if chunk is None:
                break
            yield chunk
        self._transport._core.finish(self._id)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport._streams.discard(self)
        try:
            self._portal.call(self._stream.aclose)
        finally:
            self._transport._core.finish(self._id)
