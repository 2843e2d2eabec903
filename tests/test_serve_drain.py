"""``flexroute serve`` and SIGTERM: in-flight requests finish, their records are written,
and the process exits 0 (issue 11, item 9)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestDrain:
    def test_sigterm_finishes_in_flight_requests_and_exits_zero(
        self, tmp_path: Path, emulator: Any
    ) -> None:
        """A flex request still waiting when SIGTERM arrives gets its answer and its record."""
        port, db = free_port(), tmp_path / "ledger.sqlite3"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXROUTE_")} | {
            "FLEXROUTE_OPENAI_BASE_URL": f"{emulator.base_url}/v1",
            "FLEXROUTE_DATABASE_URL": f"sqlite:///{db}",
            "OPENAI_API_KEY": "sk-drain",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "flexroute.cli", "serve", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{base}/flexroute/v1/health", timeout=1).close()  # noqa: S310
                    break
                except OSError:
                    assert time.monotonic() < deadline, "serve did not start"
                    time.sleep(0.1)
            answers: list[tuple[int, str]] = []

            def ask() -> None:
                body = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}],
                        "start_within": "10s"}  # fmt: skip
                request = urllib.request.Request(  # noqa: S310
                    f"{base}/v1/chat/completions", data=json.dumps(body).encode(),
                    headers={"content-type": "application/json", "x-emulator": "flex_queue=2"},
                )  # fmt: skip
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                    answers.append((response.status, response.headers["x-flexroute-request-id"]))

            client = threading.Thread(target=ask)
            client.start()
            time.sleep(0.7)  # the request is now waiting on the flex queue
            proc.send_signal(signal.SIGTERM)
            client.join(30)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        [(status, request_id)] = answers
        assert status == 200
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT route, status FROM requests WHERE request_id = ?", (request_id,)
            ).fetchall()
        assert rows == [("flex", "ok")]
