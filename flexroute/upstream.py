"""Talking to providers: one small interface, two HTTP clients behind it.

The engine needs only :class:`Upstream` (``send``) and :class:`UpstreamResponse` (status,
headers, a byte stream, ``aclose``). :class:`AiohttpUpstream` is the proxy's default (it costs
less CPU per request, see ``benchmarks/``); :class:`Httpx2Upstream` serves the SDK wrapper,
which lives inside ``httpx2`` already. Both follow no redirects, pool connections, and close a
connection (never return it to the pool) when a response is abandoned half-read — that is
how a flex attempt is cancelled at its deadline.

Foreign errors (aiohttp, httpx2) are translated here, and only here, into
:class:`~flexroute.errors.UpstreamConnectError` / :class:`~flexroute.errors.UpstreamStreamBroken`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import anyio
import httpx2

from flexroute.config import Settings
from flexroute.errors import UpstreamConnectError, UpstreamStreamBroken, UpstreamTimeout

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

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        return cls(
            settings.upstream_connect_timeout,
            settings.upstream_headers_timeout,
            settings.upstream_idle_timeout,
            settings.upstream_connections_per_host,
        )


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: Headers
    body: bytes


class UpstreamResponse(Protocol):
    status: int
    headers: Headers  # lower-case names, in the provider's order

    @property
    def header_map(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None:
        """Release the response; closes the connection unless it was read to the end."""


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
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        super().__init__(
            response.status,
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.raw_headers],
        )
        self._response = response

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError as exc:  # aiohttp's sock_read: the idle bound
            raise UpstreamTimeout("the provider's stream stalled") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamStreamBroken(f"upstream stream failed: {type(exc).__name__}") from exc

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout("the provider's answer stalled") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamStreamBroken(f"upstream body failed: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
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
                # Idle connections are dropped before providers' typical 60-90 s idle close, so
                # a pooled connection is rarely reused just as the server closes it. A burst
                # beyond ``per_host`` waits for a connection instead of opening hundreds.
                connector=aiohttp.TCPConnector(
                    limit=0,
                    limit_per_host=self.bounds.per_host,
                    ttl_dns_cache=300,
                    keepalive_timeout=30,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        session = self._get_session()
        try:
            with anyio.fail_after(self.bounds.headers):
                response = await session.request(
                    request.method,
                    request.url,
                    headers=list(request.headers),
                    data=request.body or None,
                    allow_redirects=False,
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamConnectError(
                f"could not reach {_origin(request.url)}: {type(exc).__name__}"
            ) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"{_origin(request.url)} sent no response headers in time"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamConnectError(
                f"could not reach {_origin(request.url)}: {type(exc).__name__}"
            ) from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Httpx2Response(_ResponseBase):
    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(
            response.status_code,
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw],
        )
        self._response = response
        self._done = False
        # One raw iterator for the whole body: the engine resumes the stream it began reading
        # (httpx2 refuses a second ``aiter_raw``).
        self._raw: AsyncIterator[bytes] | None = None

    def _chunks(self) -> AsyncIterator[bytes]:
        if self._raw is None:
            self._raw = self._response.aiter_raw()
        return self._raw

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeout("the provider's stream stalled") from exc
        except httpx2.HTTPError as exc:
            raise UpstreamStreamBroken(f"upstream stream failed: {type(exc).__name__}") from exc
        self._done = True

    async def read(self) -> bytes:
        try:
            body = b"".join([chunk async for chunk in self._chunks()])
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeout("the provider's answer stalled") from exc
        except httpx2.HTTPError as exc:
            raise UpstreamStreamBroken(f"upstream body failed: {type(exc).__name__}") from exc
        self._done = True
        return body

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
            ),
            transport=transport,
        )

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        built = self._client.build_request(
            request.method, request.url, headers=list(request.headers), content=request.body
        )
        try:
            with anyio.fail_after(self.bounds.headers):
                response = await self._client.send(built, stream=True)
        except (TimeoutError, httpx2.ReadTimeout) as exc:
            raise UpstreamTimeout(
                f"{_origin(request.url)} sent no response headers in time"
            ) from exc
        except httpx2.HTTPError as exc:
            raise UpstreamConnectError(
                f"could not reach {_origin(request.url)}: {type(exc).__name__}"
            ) from exc
        return _Httpx2Response(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _origin(url: str) -> str:
    """Scheme, host and port only: a query string may carry a key (Gemini ``?key=``)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"
