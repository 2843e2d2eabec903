"""Issue 11 item 7: a burst of requests never opens more provider connections than the cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from flexroute.config import Settings
from flexroute.upstream import AiohttpUpstream, Bounds, Httpx2Upstream, Upstream, UpstreamRequest

BURST = 500
CAP = 20
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class CountingServer:
    """A raw HTTP/1.1 server that answers each request after a pause and counts open sockets."""

    def __init__(self) -> None:
        self.open = 0
        self.peak = 0
        self.answered = 0
        self.accepted = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.accepted += 1
        self.peak = max(self.peak, self.open)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                await asyncio.sleep(0.02)
                writer.write(ANSWER)
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@asynccontextmanager
async def counting(
    make: Callable[[Bounds], Upstream], bounds: Bounds
) -> AsyncIterator[tuple[CountingServer, Upstream, str]]:
    """A counting server and an upstream client for it; both closed at the end."""
    counter = CountingServer()
    server = await asyncio.start_server(counter.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = make(bounds)
    try:
        yield counter, upstream, f"http://127.0.0.1:{port}/v1/chat/completions"
    finally:
        await upstream.aclose()
        server.close()
        await server.wait_closed()


async def burst(upstream: Upstream, url: str) -> None:
    async def one() -> None:
        response = await upstream.send(UpstreamRequest("POST", url, [], b"{}"))
        assert response.status == 200
        assert await response.read() == b"{}"
        await response.aclose()

    async with anyio.create_task_group() as tg:
        for _ in range(BURST):
            tg.start_soon(one)


@pytest.mark.parametrize("make", [AiohttpUpstream, Httpx2Upstream])
def test_a_burst_of_500_opens_at_most_the_per_host_cap(make: Callable[[Bounds], Upstream]) -> None:
    """500 concurrent requests to one host are all answered over at most ``per_host`` sockets."""

    async def main() -> CountingServer:
        async with counting(make, Bounds(per_host=CAP)) as (counter, upstream, url):
            with anyio.fail_after(120):
                await burst(upstream, url)
        return counter

    counter = asyncio.run(main())
    assert counter.answered == BURST
    assert 1 <= counter.peak <= CAP


def test_the_cap_comes_from_the_setting() -> None:
    """``FLEXROUTE_UPSTREAM_CONNECTIONS_PER_HOST`` sets the bound the proxy's upstream uses."""
    settings = Settings(upstream_connections_per_host=7)
    assert Bounds.from_settings(settings).per_host == 7
    with pytest.raises(ValueError, match="upstream_connections_per_host"):
        Settings(upstream_connections_per_host=0)


@pytest.mark.parametrize("make", [AiohttpUpstream, Httpx2Upstream])
@pytest.mark.parametrize(("pool_idle", "connections"), [(0.5, 2), (30.0, 1)])
def test_a_pooled_connection_idle_past_the_pool_idle_timeout_is_not_reused(
    make: Callable[[Bounds], Upstream], pool_idle: float, connections: int
) -> None:
    """Two requests 1.5 s apart share a connection only when the pool keeps it that long."""

    async def main() -> CountingServer:
        async with counting(make, Bounds(pool_idle=pool_idle)) as (counter, upstream, url):
            for pause in (1.5, 0):
                response = await upstream.send(UpstreamRequest("POST", url, [], b"{}"))
                await response.read()
                await response.aclose()
                await asyncio.sleep(pause)
        return counter

    counter = asyncio.run(main())
    assert (counter.answered, counter.accepted) == (2, connections)


def test_the_pool_idle_timeout_comes_from_the_setting() -> None:
    """``FLEXROUTE_UPSTREAM_POOL_IDLE_TIMEOUT`` sets how long a pooled connection may idle."""
    assert Bounds.from_settings(Settings(upstream_pool_idle_timeout=12)).pool_idle == 12
