"""Issue 11 item 7: a client that stops reading does not make ``serve`` hold its answer.

Twenty raw-socket clients ask for a 64 MiB non-streaming chat answer and never read it. Before
the fix each answer was written whole into uvicorn's transport buffer and stayed there:
``serve`` sat at about 1.5 GB. Now a whole body is sent in slices under backpressure, and a big
one from a temporary file, so what stays resident is what a run that reads everything keeps.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx2

from tests.fault_upstream import Fault, fault_upstream
from tests.serve_process import Served, serve

MIB = 1024 * 1024
CLIENTS = 20
ANSWER_MIB = 64
# glibc keeps freed heap memory for reuse, so RSS would stay high after serve lets the answers
# go: with a fixed mmap threshold every buffer of 64 KiB or more goes back to the system when it
# is freed, and RSS measures what serve still holds (about 5 MiB above idle here once the
# answers are on their way from temporary files; holding them is 20 × 64 MiB).
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}
BOUND = 320 * MIB


def chat_answer(mib: int) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-5-mini",
            "service_tier": "default",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "x" * (mib * MIB)},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def in_pieces(body: bytes) -> Fault:
    return Fault(chunks=tuple(body[at : at + MIB] for at in range(0, len(body), MIB)))


REQUEST = json.dumps({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]})


def rss_falls_below(served: Served, bound: int, seconds: float = 60.0) -> int:
    """The serve process's RSS once it is below ``bound``, or the last sample if it never
    gets there within ``seconds``. Just after the 20 answers arrived from the provider serve
    holds them (1.2 GB for a few seconds, longer on a loaded machine, while it reads each and
    writes it to a temporary file): what matters is that it lets them go while the clients
    are still not reading."""
    deadline = time.monotonic() + seconds
    while (rss := served.rss_bytes()) >= bound and time.monotonic() < deadline:
        time.sleep(0.5)
    return rss


class TestAClientThatStopsReading:
    def test_twenty_unread_64_mib_answers_do_not_stay_in_memory(self, tmp_path: Path) -> None:
        """With 20 clients not reading 64 MiB answers, serve's RSS falls far below 20×64 MiB."""
        body = chat_answer(ANSWER_MIB)
        with (
            fault_upstream(lambda seen: in_pieces(body)) as upstream,
            serve(upstream.url, tmp_path / "ledger.sqlite3", environ=MALLOC) as served,
        ):
            idle = served.rss_bytes()
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                f"content-type: application/json\r\ncontent-length: {len(REQUEST)}\r\n\r\n"
            )
            clients = []
            for _ in range(CLIENTS):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", served.port))
                sock.sendall(head.encode() + REQUEST.encode())
                clients.append(sock)
            try:
                deadline = time.monotonic() + 60
                while len(upstream.answered) < CLIENTS:  # serve has taken every answer
                    assert time.monotonic() < deadline, f"{len(upstream.answered)} answers sent"
                    time.sleep(0.2)
                grown = rss_falls_below(served, idle + BOUND) - idle
                assert served.healthy()
            finally:
                for sock in clients:
                    sock.close()
        assert grown < BOUND, f"serve grew {grown // MIB} MiB with {CLIENTS} unread answers"

    def test_a_client_that_reads_gets_the_whole_answer_intact(self, tmp_path: Path) -> None:
        """An answer big enough to go through the temporary file arrives byte for byte."""
        body = chat_answer(9)
        with (
            fault_upstream(lambda seen: in_pieces(body)) as upstream,
            serve(upstream.url, tmp_path / "ledger.sqlite3") as served,
        ):
            response = httpx2.post(
                f"{served.base}/v1/chat/completions", content=REQUEST,
                headers={"content-type": "application/json"}, timeout=60,
            )  # fmt: skip
        assert response.status_code == 200
        assert response.content == body
