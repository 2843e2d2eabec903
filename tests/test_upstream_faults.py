"""The transport boundary (flexroute.upstream), for both HTTP clients: what a hostile or silent
provider turns into — the one place foreign errors become flexroute's (issue 11, items 3, 4, 6).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest

from flexroute.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamMalformed,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from flexroute.upstream import AiohttpUpstream, Bounds, Httpx2Upstream, Upstream, UpstreamRequest
from tests.fault_upstream import Fault, dead_url, fault_upstream

CLIENTS: list[Callable[[Bounds], Upstream]] = [AiohttpUpstream, Httpx2Upstream]
EVENTS = ((b"content-type", b"text/event-stream"),)
BOUNDS = Bounds(connect=2, headers=5, idle=0.5, total=1.0)


def fetch(make: Callable[[Bounds], Upstream], url: str, total: float | None = None) -> bytes:
    """Send one request and read the whole answer, as the engine would."""

    async def go() -> bytes:
        upstream = make(BOUNDS)
        try:
            response = await upstream.send(UpstreamRequest("POST", url, [], b"{}", total=total))
            try:
                return b"".join([chunk async for chunk in response.aiter_bytes()])
            finally:
                await response.aclose()
        finally:
            await upstream.aclose()

    return anyio.run(go)


@pytest.mark.parametrize("make", CLIENTS, ids=["aiohttp", "httpx2"])
class TestTheBoundary:
    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            (Fault(status_line=b"HTTP/1.1 999 Whatever"), UpstreamMalformed),
            (Fault(status_line=b"HTTP/1.1 600 Nope"), UpstreamMalformed),
            (Fault(headers=((b"x-trace", b"a\x01b"),)), UpstreamMalformed),
            (Fault(headers=((b"x-trace", b"a\x7fb"),)), UpstreamMalformed),
            (Fault(reset_before_headers=True), UpstreamStreamBroken),
            (Fault(status_line=b"NOT HTTP AT ALL"), UpstreamError),
        ],
        ids=["status-999", "status-600", "control-byte", "del-byte", "reset", "not-http"],
    )
    def test_a_head_http_does_not_allow_never_becomes_a_response(
        self, make: Callable[[Bounds], Upstream], fault: Fault, error: type[UpstreamError]
    ) -> None:
        """Status 999, a control byte in a header, a reset: flexroute's error, never relayed;
        and never "unreachable", which would say the request did not reach the provider."""
        with fault_upstream(lambda seen: fault) as upstream, pytest.raises(error) as raised:
            fetch(make, upstream.url + "/x")
        assert not isinstance(raised.value, UpstreamConnectError)

    def test_a_tab_and_latin_1_text_in_a_header_are_fine(
        self, make: Callable[[Bounds], Upstream]
    ) -> None:
        """Only control characters are refused: HTAB and obs-text are valid field content."""
        fault = Fault(headers=((b"x-trace", b"a\tb \xe9"),))
        with fault_upstream(lambda seen: fault) as upstream:
            assert fetch(make, upstream.url + "/x") == b'{"ok":true}'

    def test_a_refused_connection_is_unreachable(self, make: Callable[[Bounds], Upstream]) -> None:
        """No connection: the only case that says the provider was never reached."""
        with pytest.raises(UpstreamConnectError):
            fetch(make, dead_url() + "/x")

    def test_a_drip_is_cut_at_the_total_bound(self, make: Callable[[Bounds], Upstream]) -> None:
        """A byte every 0.1 s never trips the idle bound; the total bound ends it."""
        fault = Fault(headers=EVENTS, chunks=(b": x\n\n",) * 200, gap=0.1, content_length=False)
        with fault_upstream(lambda seen: fault) as upstream:
            began = time.monotonic()
            with pytest.raises(UpstreamTimeout, match="longer than 1 s"):
                fetch(make, upstream.url + "/x")
            assert 0.9 <= time.monotonic() - began < 6

    def test_a_request_may_set_its_own_total(self, make: Callable[[Bounds], Upstream]) -> None:
        """A flex attempt's total starts at its budget's end: the request's own bound wins."""
        fault = Fault(headers=EVENTS, chunks=(b": x\n\n",) * 20, gap=0.1, content_length=False)
        with fault_upstream(lambda seen: fault) as upstream:
            assert fetch(make, upstream.url + "/x", total=30.0) == b": x\n\n" * 20

    def test_a_stall_is_cut_at_the_idle_bound(self, make: Callable[[Bounds], Upstream]) -> None:
        """Silence after the first bytes: the idle bound, named as a stall."""
        fault = Fault(headers=EVENTS, chunks=(b": x\n\n",), stall=10, content_length=False)
        with fault_upstream(lambda seen: fault) as upstream:
            began = time.monotonic()
            with pytest.raises(UpstreamTimeout, match=r"stalled|longer than"):
                fetch(make, upstream.url + "/x")
            assert time.monotonic() - began < 6
