"""Issue 11 item 4: a whole (non-streaming) answer keeps its fee only if the client got it.

``serve`` sends a whole body in 64 KiB slices under backpressure; its record is written just
before the last slice goes out, with what the proxy knows then: a client that left before is
recorded ``client_closed`` with no fee (the cost stays: the provider billed), one that is
still there ``ok`` with the fee, and either way the record is in the ledger before the client
can read the last byte. Raw-socket clients against ``flexroute serve`` and a flex provider
streaming a 16 MiB answer in 1 MiB deltas, which the engine assembles for a non-streaming
client.
"""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai

from flexroute.sdk import wrap
from tests.fault_upstream import Fault, fault_upstream, settings_for, sse
from tests.serve_process import Served, serve
from tests.test_failover_catalogue import EVENTS, chat_chunk

MIB = 1024 * 1024
ANSWER_MIB = 16  # well past the 4 MiB spill and what loopback's socket buffers hold
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def big_flex_stream(mib: int) -> Fault:
    """A flex chat stream whose content is ``mib`` MiB, one MiB a delta, with its usage."""
    first = chat_chunk("flex", {"role": "assistant", "content": ""})
    pieces = [chat_chunk("flex", {"content": "x" * MIB}) for _ in range(mib)]
    stop = chat_chunk("flex", {}, usage=None).replace(b"null", b'"stop"', 1)
    usage = chat_chunk("flex", None, usage=USAGE)
    return Fault(headers=EVENTS, chunks=sse(first, *pieces, stop, usage, b"[DONE]"))


REQUEST = json.dumps(
    {
        "model": "gpt-5-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "start_within": "20s",
    }
).encode()
HEAD = (
    "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    f"connection: close\r\ncontent-length: {len(REQUEST)}\r\n\r\n"
).encode()


@contextmanager
def big_answers(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    """``serve`` in front of the big flex answer, and its ledger."""
    ledger = tmp_path / "ledger.sqlite3"
    with (
        fault_upstream(lambda seen: big_flex_stream(ANSWER_MIB)) as upstream,
        serve(upstream.url, ledger) as served,
    ):
        yield served, ledger


def ask(served: Served) -> tuple[socket.socket, dict[str, str], bytes]:
    """A raw client with a small receive buffer: its socket, the response headers and the
    body bytes read with them."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", served.port))
    sock.sendall(HEAD + REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before the headers: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return sock, headers, rest


def record_of(served: Served, request_id: str) -> dict[str, Any] | None:
    try:
        url = f"{served.base}/flexroute/v1/requests/{request_id}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            found: dict[str, Any] = json.loads(response.read())
            return found
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def metric(served: Served, name: str, **labels: str) -> float:
    """The sum of ``flexroute_<name>`` samples from ``GET /metrics`` whose labels include
    ``labels`` (0 when there are none)."""
    with urllib.request.urlopen(f"{served.base}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == f"flexroute_{name}" and all(w in sample for w in wanted):
            total += float(value)
    return total


def rows_for(ledger: Path, request_id: str) -> list[tuple[str, int]]:
    with sqlite3.connect(ledger) as conn:
        query = "SELECT status, http_status FROM requests WHERE request_id = ?"
        return list(conn.execute(query, (request_id,)).fetchall())


class TestAClientThatLeavesMidBody:
    def test_is_recorded_client_closed_without_a_fee(self, tmp_path: Path) -> None:
        """A client that reads the headers and part of a 16 MiB flex answer and closes gets
        exactly one record: client_closed, fee 0, the provider's cost kept; /metrics agrees."""
        with big_answers(tmp_path) as (served, ledger):
            sock, headers, got = ask(served)
            request_id = headers["x-flexroute-request-id"]
            assert Decimal(headers["x-flexroute-fee-usd"]) > 0  # what it would have cost
            while len(got) < 256 * 1024:
                got += sock.recv(65536)
            assert len(got) < ANSWER_MIB * MIB
            sock.close()
            deadline = time.monotonic() + 60
            while (record := record_of(served, request_id)) is None:
                assert time.monotonic() < deadline, "no record for the client that left"
                time.sleep(0.2)
            time.sleep(1.0)  # a second record would have come by now
            assert served.healthy()
            rows = rows_for(ledger, request_id)
            metrics = {
                "left": metric(served, "requests_total", status="client_closed"),
                "ok": metric(served, "requests_total", status="ok"),
                "fee": metric(served, "fee_usd_total"),
                "cost": metric(served, "cost_usd_total"),
            }
        assert record["status"] == "client_closed"
        assert Decimal(record["fee_usd"]) == 0
        assert record["route"] == "flex"
        assert record["tier_served"] == "flex"
        assert Decimal(record["cost_usd"]) == Decimal(headers["x-flexroute-cost-usd"]) > 0
        assert len(rows) == 1
        assert metrics["left"] == 1
        assert metrics["ok"] == 0
        assert metrics["fee"] == 0
        assert metrics["cost"] > 0


class TestAClientThatReadsItAll:
    def test_is_recorded_ok_with_the_fee_before_the_last_byte(self, tmp_path: Path) -> None:
        """A client that reads the whole 16 MiB answer finds its ok record, with the fee the
        headers named, the moment the last byte has arrived."""
        with big_answers(tmp_path) as (served, ledger):
            conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
            try:
                conn.request("POST", "/v1/chat/completions", REQUEST,
                             {"content-type": "application/json"})  # fmt: skip
                response = conn.getresponse()
                headers = {k.lower(): v for k, v in response.getheaders()}
                got = response.read()  # to the end of the chunked body
                record = record_of(served, headers["x-flexroute-request-id"])
            finally:
                conn.close()
            rows = rows_for(ledger, headers["x-flexroute-request-id"])
            fee = metric(served, "fee_usd_total")
        assert json.loads(got)["choices"][0]["message"]["content"] == "x" * (ANSWER_MIB * MIB)
        assert record is not None, "the record was not there when the last byte arrived"
        assert record["status"] == "ok"
        assert record["fee_usd"] == headers["x-flexroute-fee-usd"]
        assert Decimal(record["fee_usd"]) > 0
        assert rows == [("ok", 200)]
        assert fee == float(record["fee_usd"])


class TestTheWrapper:
    def test_a_wrapped_client_is_recorded_ok_with_the_fee(self, tmp_path: Path) -> None:
        """The SDK wrapper holds the whole answer in process: ok, with its fee, as before."""
        with fault_upstream(lambda seen: big_flex_stream(1)) as upstream:
            settings = settings_for(upstream.url, tmp_path / "ledger.sqlite3")
            client = wrap(
                openai.OpenAI(api_key="sk-test", base_url=f"{upstream.url}/v1", max_retries=0),
                settings=settings,
                start_within="20s",
            )
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
                )
            finally:
                client.close()
        rows = rows_for(tmp_path / "ledger.sqlite3", raw.headers["x-flexroute-request-id"])
        assert raw.parse().choices[0].message.content == "x" * MIB
        assert Decimal(raw.headers["x-flexroute-fee-usd"]) > 0
        assert rows == [("ok", 200)]
