"""Talking to providers: one small interface, two HTTP clients behind it.

The engine needs only :class:`Upstream` (``send``) and :class:`UpstreamResponse` (status,
headers, a byte stream, ``aclose``). :class:`AiohttpUpstream` is the proxy's default (it costs
less CPU per request, see ``benchmarks/``); :class:`Httpx2Upstream` serves the SDK wrapper,
which lives inside ``httpx2`` already. Both follow no redirects, pool connections, and close a
connection (never return it to the pool) when a response is abandoned half-read — that is
how a flex attempt is cancelled at its deadline.

Foreign errors (aiohttp, httpx2) are translated here, and only here: no connection is
:class:`~flexroute.errors.UpstreamConnectError` (the request never reached the provider); a
connection that broke off, before the response headers or midway, is
:class:`~flexroute.errors.UpstreamStreamBroken`; a bound passed is
:class:`~flexroute.errors.UpstreamTimeout`. The response head is checked here too: a status
HTTP does not define (outside 200–599: ``999``) or a header holding a control character is
:class:`~flexroute.errors.UpstreamMalformed`, so no such answer is relayed to a client.

**Bounds** (:class:`Bounds`, from ``FLEXROUTE_UPSTREAM_*``): connect; request sent → response
headers; the silence between two reads of the body; and the whole answer, request sent → last
byte (``total``; a request may set its own, as a flex attempt does so that its budget is
never cut short). The total bound costs one timer per response, not one per read: when it
fires the response is closed and the read in progress ends as an ``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aiohttp
import anyio
import httpx2

from flexroute.clock import now
from flexroute.config import Settings
from flexroute.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamStreamBroken,
    UpstreamTimeout,
)

Headers = Sequence[tuple[str, str]]

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the HTTP client computes itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """How long a provider may keep flexroute waiting, in seconds (see ``Settings``)."""

    connect: float = 10.0
    headers: float = 600.0  # request sent → response headers (a whole non-streaming answer)
    idle: float = 300.0  # between two reads of a response body
    per_host: int = 100  # open connections to one provider host, pooled or in use
    total: float = 1800.0  # request sent → the answer's last byte
    pool_idle: float = 30.0  # a pooled connection unused this long is closed

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            settings.upstream_connect_timeout,
            settings.upstream_headers_timeout,
            settings.upstream_idle_timeout,
            settings.upstream_connections_per_host,
            settings.upstream_total_timeout,
            settings.upstream_pool_idle_timeout,
        )


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Headers
    body: bytes
    total: float | None = None  # seconds for the whole answer from sending; None: Bounds.total


# C0 controls but horizontal tab, and DEL: never valid in a field (RFC 9110 §5.5).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_head(status: int, headers: Headers) -> None:
    """An answer HTTP does not allow is the provider's malformed answer, never relayed."""
    if not 200 <= status <= 599:
        raise UpstreamMalformed(
            f"the provider answered with HTTP status {status}, not one HTTP defines"
        )
    if _CONTROL.search(" ".join(f"{k} {v}" for k, v in headers)):
        name = next(k for k, v in headers if _CONTROL.search(f"{k} {v}"))
        raise UpstreamMalformed(
            f"the provider's response header {name!r} holds a control character"
        )


class UpstreamResponse(Protocol):
    status: int
    headers: Headers  # lower-case names, in the provider's order

    @property
    def header_map(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None:
        """Release the response; closes the connection unless it was read to the end."""


_R = TypeVar("_R", bound=UpstreamResponse)


async def _checked(answer: _R) -> _R:
    """``answer``, if its head is one HTTP allows; else it is closed and refused."""
    try:
        check_head(answer.status, answer.headers)
    except UpstreamMalformed:
        await answer.aclose()
        raise
    return answer


class Upstream(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


class _ResponseBase:
    status: int
    headers: Headers

    def __init__(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers
        self._map: dict[str, str] | None = None

    @property
    def header_map(self) -> Mapping[str, str]:
        if self._map is None:
            self._map = dict(self.headers)
        return self._map


class _AiohttpResponse(_ResponseBase):
    def __init__(self, response: aiohttp.ClientResponse, total: float, remaining: float) -> None:
        super().__init__(
            response.status,
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.raw_headers],
        )
        self._response = response
        self._total = total
        self._expired = False
        self._timer = asyncio.get_running_loop().call_later(max(remaining, 0.0), self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._response.close()  # the read in progress fails; _failed says why

    def _failed(self, exc: BaseException, what: str) -> UpstreamError:
        if self._expired:
            return UpstreamTimeout(f"the provider's answer took longer than {self._total:g} s")
        if isinstance(exc, TimeoutError):  # aiohttp's sock_read: the idle bound
            return UpstreamTimeout(f"the provider's {what} stalled")
        return UpstreamStreamBroken(f"upstream {what} failed: {type(exc).__name__}")

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._failed(exc, "stream") from exc

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._failed(exc, "answer") from exc

    async def aclose(self) -> None:
        self._timer.cancel()
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpUpstream:
    """Pooled aiohttp client; the proxy's default."""

    def __init__(self, bounds: Bounds | None = None) -> None:
        self.bounds = bounds or Bounds()
        # sock_connect bounds the TCP/TLS connect; waiting for a pooled connection under the
        # per-host cap is bounded by the headers bound in ``send``.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.bounds.connect, sock_read=self.bounds.idle
        )
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
                # Idle connections are dropped (default 30 s) before providers' typical 60-90 s
                # idle close, so a pooled connection is rarely reused as the server closes it.
                # A burst beyond ``per_host`` waits for a connection instead of opening hundreds.
                connector=aiohttp.TCPConnector(
                    limit=0,
                    limit_per_host=self.bounds.per_host,
                    ttl_dns_cache=300,
                    keepalive_timeout=self.bounds.pool_idle,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        session = self._get_session()
        total = self.bounds.total if request.total is None else request.total
        began = now()
        try:
            # asyncio's timeout, not anyio's fail_after: the same bound for 40% of the CPU (3
            # µs against 8: no backend lookup, no cancel-scope bookkeeping), on every request.
            async with asyncio.timeout(min(self.bounds.headers, total)):
                response = await session.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    data=request.body or None,
                    allow_redirects=False,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise _unreachable(request, exc) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"{_origin(request.url)} sent no response headers in time"
            ) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: never reached it
            raise _unreachable(request, exc) from exc
        except aiohttp.ClientResponseError as exc:  # a response head aiohttp cannot parse
            raise UpstreamMalformed(
                f"the provider's response head is not valid HTTP ({exc.message})"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:  # connected, sent, then cut off
            raise UpstreamStreamBroken(
                f"the provider broke off before its response headers: {type(exc).__name__}"
            ) from exc
        answer = _AiohttpResponse(response, total, total - (now() - began))
        return await _checked(answer)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Httpx2Response(_ResponseBase):
    def __init__(self, response: httpx2.Response, total: float, deadline: float) -> None:
        super().__init__(
            response.status_code,
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw],
        )
        self._response = response
        self._total, self._deadline = total, deadline
        self._done = False
        # One raw iterator for the whole body: the engine resumes the stream it began reading
        # (httpx2 refuses a second ``aiter_raw``).
        self._raw: AsyncIterator[bytes] | None = None

    def _chunks(self) -> AsyncIterator[bytes]:
        if self._raw is None:
            self._raw = self._response.aiter_raw()
        return self._raw

    async def _next(self, what: str) -> bytes | None:
        """The next chunk (None at the end) within the total bound, errors translated."""
        try:
            with anyio.fail_after(max(self._deadline - anyio.current_time(), 0.0)):
                return await anext(self._chunks(), None)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"the provider's answer took longer than {self._total:g} s"
            ) from exc
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeout(f"the provider's {what} stalled") from exc
        except httpx2.HTTPError as exc:
            raise UpstreamStreamBroken(f"upstream {what} failed: {type(exc).__name__}") from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while (chunk := await self._next("stream")) is not None:
            yield chunk
        self._done = True

    async def read(self) -> bytes:
        chunks = []
        while (chunk := await self._next("answer")) is not None:
            chunks.append(chunk)
        self._done = True
        return b"".join(chunks)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._response.aclose()


class Httpx2Upstream:
    """Pooled httpx2 client (the SDK wrapper's face, and a benchmark alternative)."""

    def __init__(
        self,
        bounds: Bounds | None = None,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.bounds = bounds or Bounds()
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(
                connect=self.bounds.connect, read=self.bounds.idle, write=60, pool=None
            ),
            follow_redirects=False,
            # httpx2 pools per client, not per host; the wrapper talks to one provider.
            limits=httpx2.Limits(
                max_connections=self.bounds.per_host,
                max_keepalive_connections=self.bounds.per_host,
                keepalive_expiry=self.bounds.pool_idle,
            ),
            transport=transport,
        )

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        built = self._client.build_request(
            request.method, request.url, headers=list(request.headers), content=request.body
        )
        total = self.bounds.total if request.total is None else request.total
        deadline = anyio.current_time() + total
        try:
            with anyio.fail_after(min(self.bounds.headers, total)):
                response = await self._client.send(built, stream=True)
        except (TimeoutError, httpx2.ReadTimeout) as exc:
            raise UpstreamTimeout(
                f"{_origin(request.url)} sent no response headers in time"
            ) from exc
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.ProxyError) as exc:
            raise _unreachable(request, exc) from exc
        except httpx2.HTTPError as exc:  # connected, sent, then cut off (or not HTTP at all)
            raise UpstreamStreamBroken(
                f"the provider broke off before its response headers: {type(exc).__name__}"
            ) from exc
        answer = _Httpx2Response(response, total, deadline)
        return await _checked(answer)

    async def aclose(self) -> None:
        await self._client.aclose()


def _unreachable(request: UpstreamRequest, exc: BaseException) -> UpstreamConnectError:
    return UpstreamConnectError(f"could not reach {_origin(request.url)}: {type(exc).__name__}")


def _origin(url: str) -> str:
    """Scheme, host and port only: a query string may carry a key (Gemini ``?key=``)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def is_event_stream(response: UpstreamResponse) -> bool:
    """Whether ``response`` says it is a server-sent event stream."""
    return response.header_map.get("content-type", "").lower().startswith("text/event-stream")
