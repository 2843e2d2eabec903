"""What the popular-client compatibility tests (``tests/test_compat_*.py``) share.

Each test drives a real client library the way its docs say to point it at another base URL,
through the proxy (``flexroute serve``'s app) to the emulator, and reads back the ledger record
of every request the emulator saw. Retry tests run the same failing call straight at the
emulator first: the number of attempts the emulator sees must be the same both ways.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from flexroute.proxy import create_app
from flexroute.testing import RunningEmulator, serve_in_thread
from tests.conftest import Proxy, make_settings

OPENAI_MODEL = "gpt-5-mini"  # flex-capable and priced
GEMINI_MODEL = "gemini-2.5-flash"  # flex-capable and priced
CLAUDE_MODEL = "claude-haiku-4-5"  # Claude: proxy-only, never flex
# litellm's model name for each provider, and the path its ``api_base`` carries after the host
LITELLM_PROVIDERS = {
    "openai": (f"openai/{OPENAI_MODEL}", "/v1"),
    "anthropic": (f"anthropic/{CLAUDE_MODEL}", ""),
    "gemini": (f"gemini/{GEMINI_MODEL}", "/v1beta"),
}
START_WITHIN = "5s"
# A retryable provider error with a short Retry-After, so each client's backoff is brief.
FAILING = "status=503;retry_after=0.05"
ANSWER = "Flex capacity is cheaper when the queue is."


class Weather(BaseModel):
    """The structured output every client is asked for."""

    location: str
    unit: Literal["celsius", "fahrenheit"]


WEATHER = Weather(location="flex", unit="celsius")  # the emulator's minimal instance


def record(proxy: Proxy, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The ledger record, waiting a little for one a stream's end is still writing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return proxy.record(request_id)
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.02)


def records(proxy: Proxy, emulator: RunningEmulator, since: int = 0) -> list[dict[str, Any]]:
    """The ledger record of each flexroute request the emulator saw (from log entry ``since``),
    in arrival order."""
    ids = [e["client_request_id"] for e in emulator.log()[since:]]
    return [record(proxy, i) for i in dict.fromkeys(ids) if i]


def only_record(proxy: Proxy, emulator: RunningEmulator, since: int = 0) -> dict[str, Any]:
    """The one ledger record of the one request the emulator saw."""
    [one] = records(proxy, emulator, since)
    return one


def assert_flex(rec: dict[str, Any]) -> None:
    """Served at flex within ``START_WITHIN``, with a fee."""
    assert (rec["route"], rec["tier_served"], rec["status"]) == ("flex", "flex", "ok"), rec
    assert rec["start_within_ms"] == 5000
    assert Decimal(rec["fee_usd"]) > 0


def assert_passthrough(rec: dict[str, Any], tier: str) -> None:
    """Forwarded as it came, served at ``tier``, no fee."""
    assert (rec["route"], rec["tier_served"], rec["status"]) == ("passthrough", tier, "ok"), rec
    assert Decimal(rec["fee_usd"]) == 0


def attempts(emulator: RunningEmulator, call: Callable[[], object], error: Any) -> int:
    """How many requests the emulator saw while ``call`` failed with ``error``."""
    before = len(emulator.log())
    with pytest.raises(error):
        call()
    return len(emulator.log()) - before


async def attempts_async(
    emulator: RunningEmulator, call: Callable[[], Awaitable[object]], error: Any
) -> int:
    """``attempts`` for a coroutine."""
    before = len(emulator.log())
    with pytest.raises(error):
        await call()
    return len(emulator.log()) - before


class Dropper:
    """A provider host that reads each request and closes the connection without answering,
    counting the requests, as a crashed or restarting provider front end would."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._serve, name="dropper", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with suppress(OSError):
                    if conn.recv(65536):
                        self.requests += 1

    def close(self) -> None:
        self._listener.close()


@contextmanager
def proxy_to(tmp_path: Path, upstream: str) -> Iterator[Proxy]:
    """The proxy in sidecar mode with every provider's base URL at ``upstream``."""
    settings = make_settings(tmp_path, upstream)
    with serve_in_thread(create_app(settings)) as url:
        yield Proxy(url, settings)
