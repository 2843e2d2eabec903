"""Issue 11, "How we will know": a disconnect storm leaves one true record per request.

Two storms of 1,000 raw-socket clients hit ``flexroute serve``, each all at once —
passthrough and flex, streaming and not. A third read their whole answer; a third leave
before the response headers (the provider is still silent then); the streaming third leave
after the headers and the first event (the provider stalls after it), the non-streaming ones
of that third leave before the headers too. Each request carries a marker the fault upstream
reads, so the test knows which provider call was whose. Afterwards: every request the
provider saw has exactly one ledger record, whose status is what its client really got
(``ok`` for a whole answer, ``client_closed`` for a client that left); flexroute never had
more provider connections open than its per-host cap; its file descriptors, event-loop tasks
and provider connections are back to where they started, the second storm leaves its memory
where the first did; health and readiness still answer 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.fault_upstream import Fault, fault_upstream, settings_for
from tests.recording_upstream import Seen
from tests.serve_process import Served, serve
from tests.test_failover_catalogue import EVENTS, chat_body, chat_events

CLIENTS = 1000  # a storm; the test sends two
MIB = 1024 * 1024
LEAK = 48 * MIB  # the second storm may grow RSS by allocator noise, not by what it held
CAP = 50  # FLEXROUTE_UPSTREAM_CONNECTIONS_PER_HOST for this storm
STALL = 4.0  # seconds the provider stays silent for a client that is about to leave


@dataclass(frozen=True)
class Plan:
    """One client: its route, whether it streams, and when it leaves."""

    marker: str
    flex: bool
    stream: bool
    leaves: str  # "never" (reads it all), "before" (the headers), "after" (headers + 1 event)

    def request(self) -> bytes:
        body: dict[str, object] = {
            "model": "gpt-5-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "user": self.marker,
            "stream": self.stream,
        }
        if self.flex:
            body["start_within"] = "20s"
        data = json.dumps(body).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"connection: close\r\ncontent-length: {len(data)}\r\n\r\n"
        )
        return head.encode() + data


def plans(seed: int, name: str) -> list[Plan]:
    rng = random.Random(seed)
    out = []
    for i in range(CLIENTS):
        stream = rng.random() < 0.5
        leaves = rng.choice(["never", "before", "after"])
        if leaves == "after" and not stream:
            leaves = "before"  # a whole answer comes with its headers: nothing to leave in
        out.append(Plan(f"{name}-{i}", rng.random() < 0.5, stream, leaves))
    return out


def provider(by_marker: dict[str, Plan]) -> Callable[[Seen], Fault]:
    """The fault upstream's script: each marker's answer, as its client's plan needs."""

    def answer(seen: Seen) -> Fault:
        body = seen.json()
        plan = by_marker[body["user"]]
        tier = str(body.get("service_tier") or "default")
        events = chat_events(tier)
        if plan.leaves == "before":
            return Fault(delay=STALL)
        if plan.leaves == "after":
            return Fault(headers=EVENTS, chunks=events[:1], content_length=False, stall=STALL)
        if body.get("stream"):
            return Fault(headers=EVENTS, chunks=events, content_length=False, gap=0.02)
        return Fault(chunks=(chat_body(tier),))

    return answer


async def client(port: int, plan: Plan, rng: random.Random) -> bytes:
    """What the client received before it left (or the whole answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(plan.request())
        await writer.drain()
        if plan.leaves == "before":
            await asyncio.sleep(rng.uniform(0.3, 3.0))
            return got
        while plan.leaves == "never" or b"data: " not in got.partition(b"\r\n\r\n")[2]:
            piece = await asyncio.wait_for(reader.read(65536), 120)
            if not piece:
                break
            got += piece
        return got
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def storm(port: int, todo: list[Plan]) -> list[bytes]:
    async def main() -> list[bytes]:
        rng = random.Random(7)
        return await asyncio.gather(*(client(port, plan, rng) for plan in todo))

    return asyncio.run(main())


def watch_connections(served: Served, port: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], served.connections_to(port))
        time.sleep(0.02)


def records(ledger: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(ledger) as conn:
        rows = conn.execute("SELECT request_id, route, status FROM requests").fetchall()
    return {request_id: (route, status) for request_id, route, status in rows}


def settle(served: Served, ledger: Path, upstream_port: int) -> None:
    """Wait until no provider connection is left and the ledger stopped growing."""
    deadline, last = time.monotonic() + 60, -1
    while (n := len(records(ledger))) != last or served.connections_to(upstream_port):
        assert time.monotonic() < deadline, "the storm never settled"
        last = n
        time.sleep(1.0)


class TestDisconnectStorm:
    def test_a_thousand_leaving_clients_leave_one_true_record_each(self, tmp_path: Path) -> None:
        """Every provider call has one record telling what its client got; nothing leaks: a
        second storm leaves the process's memory where the first left it."""
        storms = [plans(11, "first"), plans(12, "second")]
        todo = storms[0] + storms[1]
        by_marker = {plan.marker: plan for plan in todo}
        ledger = tmp_path / "ledger.sqlite3"
        got: list[bytes] = []
        after: list[int] = []  # RSS once each storm has settled
        with (
            fault_upstream(provider(by_marker)) as upstream,
            serve(upstream.url, ledger, upstream_connections_per_host=str(CAP)) as served,
        ):
            upstream_port = int(upstream.url.rsplit(":", 1)[1])
            fds, tasks = served.open_fds(), served.gauge("event_loop_tasks")
            stop, peak = threading.Event(), [0]
            watcher = threading.Thread(
                target=watch_connections, args=(served, upstream_port, stop, peak)
            )
            watcher.start()
            try:
                for clients in storms:
                    got += storm(served.port, clients)
                    settle(served, ledger, upstream_port)
                    after.append(served.rss_bytes())
            finally:
                stop.set()
                watcher.join()
            assert served.healthy()
            assert served.healthy("ready")
            assert served.open_fds() <= fds + 5, (fds, served.open_fds())
            assert served.gauge("event_loop_tasks") <= tasks + 2, tasks
            seen = list(upstream.seen)
        assert after[1] - after[0] < LEAK, f"RSS {after[0] // MIB} -> {after[1] // MIB} MiB"
        assert 1 <= peak[0] <= CAP, peak

        ledger_rows = records(ledger)
        calls: dict[str, set[str]] = {}  # request id -> the markers the provider saw with it
        for call in seen:
            request_id = dict(call.headers)["x-client-request-id"]
            calls.setdefault(request_id, set()).add(call.json()["user"])
        outcomes: Counter[str] = Counter()
        missing = Counter(  # (flex, stream, leaves) of provider calls with no record
            (by_marker[m].flex, by_marker[m].stream, by_marker[m].leaves)
            for request_id, ms in calls.items()
            if request_id not in ledger_rows
            for m in ms
        )
        assert not missing, f"provider calls without a record: {missing}"
        for request_id, markers in calls.items():
            [marker] = markers  # a fallback attempt carries the same request id
            plan = by_marker[marker]
            route, status = ledger_rows[request_id]
            expected = "ok" if plan.leaves == "never" else "client_closed"
            assert status == expected, (plan, route, status)
            if plan.flex:
                assert route == "flex", (plan, route)
            outcomes[f"{plan.leaves}:{status}"] += 1
        # a record nobody upstream saw is a client that left while its call was being made
        for request_id, (_route, status) in ledger_rows.items():
            if request_id not in calls:
                assert status == "client_closed", (request_id, status)
        for plan, answer in zip(todo, got, strict=True):
            if plan.leaves == "never":
                assert answer.startswith(b"HTTP/1.1 200 "), (plan, answer[:200])
                if plan.stream:
                    assert b"data: [DONE]" in answer, (plan, answer[-200:])
        assert outcomes["never:ok"] == sum(plan.leaves == "never" for plan in todo)
        # the storm did what it says: many clients left before, and after, the headers
        assert outcomes["before:client_closed"] >= 100, outcomes
        assert outcomes["after:client_closed"] >= 200, outcomes


class TestAClientLeavingBeforeTheHeaders:
    @pytest.mark.parametrize(
        "path", ["/v1/chat/completions", "/v1/embeddings"], ids=["routed", "forwarded"]
    )
    def test_its_provider_call_is_recorded_client_closed(self, tmp_path: Path, path: str) -> None:
        """A client that leaves while the provider is still silent leaves one
        ``client_closed`` record (before the fix: none for routed and forwarded paths)."""
        ledger = tmp_path / "ledger.sqlite3"
        with (
            fault_upstream(lambda seen: Fault(delay=STALL)) as upstream,
            serve_in_thread(create_app(settings_for(upstream.url, ledger))) as url,
        ):
            body = json.dumps({"model": "gpt-5-mini", "messages": [], "input": "hi"}).encode()
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                deadline = time.monotonic() + 20
                while not upstream.seen:
                    assert time.monotonic() < deadline, "the call never reached the provider"
                    time.sleep(0.02)
            while not ledger.exists() or not records(ledger):
                assert time.monotonic() < deadline, "no record"
                time.sleep(0.05)
            [request_id] = {dict(call.headers).get("x-client-request-id") for call in upstream.seen}
            rows = records(ledger)
        assert list(rows.values()) == [("passthrough", "client_closed")]
        if request_id is not None:  # routed calls carry flexroute's request id upstream
            assert list(rows) == [request_id]
