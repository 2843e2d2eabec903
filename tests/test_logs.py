"""One structured log line per request, never a key or a body (issue 12, item 3)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import openai
import pytest

from flexroute.logs import JSONFormatter, TextFormatter
from tests.conftest import Proxy

HI: list[Any] = [{"role": "user", "content": "a prompt that must not be logged"}]


class TestRequestLines:
    def test_one_line_per_request_with_the_money_and_no_secrets(
        self, proxy: Proxy, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A flex request logs its route, tiers, wait and fee; not its key nor its prompt."""
        caplog.set_level(logging.INFO, logger="flexroute.requests")
        client = openai.OpenAI(
            api_key="sk-canary-never-logged", base_url=f"{proxy.url}/v1", max_retries=0
        )
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=HI, extra_body={"start_within": "5s"}
        )
        request_id = raw.headers["x-flexroute-request-id"]
        [line] = [r for r in caplog.records if r.name == "flexroute.requests"]
        as_json = json.loads(JSONFormatter().format(line))
        assert as_json["request_id"] == request_id
        assert (as_json["route"], as_json["tier_served"], as_json["status"]) == (
            "flex", "flex", "ok"
        )  # fmt: skip
        assert as_json["fee_usd"] == raw.headers["x-flexroute-fee-usd"]
        # first byte: the monotonic attempt log; duration: wall-clock times; 1 ms apart at most
        assert 0 < as_json["first_byte_ms"] <= as_json["duration_ms"] + 1
        text = TextFormatter().format(line)
        for rendered in (json.dumps(as_json), text):
            assert "sk-canary" not in rendered
            assert "must not be logged" not in rendered
        assert f"request_id={request_id}" in text


class TestStuckPipe:
    def test_a_stderr_nobody_reads_never_blocks_logging(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A log pipe that is never read (a stuck shipper) costs dropped lines, not a hang."""
        import os
        import time

        from flexroute import logs

        read_end, write_end = os.pipe()
        stuck = os.fdopen(write_end, "w")
        monkeypatch.setattr("sys.stderr", stuck)
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        try:
            logs.configure("json", "info")
            began = time.monotonic()
            for i in range(30_000):
                logging.getLogger("flexroute.requests").info("request", extra={"n": i})
            assert time.monotonic() - began < 20
            assert logs._DroppingQueueHandler.dropped > 0
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
            drain = threading.Thread(target=lambda: [*iter(lambda: os.read(read_end, 65536), b"")])
            drain.start()  # let the writer thread finish, then stop it
            logs._stop_listener(timeout=20)
            stuck.close()
            drain.join(10)
            os.close(read_end)


class TestUvicornLines:
    def test_uvicorn_access_lines_stay_off_when_configured_after_uvicorn(self) -> None:
        """A worker sets up flexroute's handler after uvicorn's config (access_log=False):
        uvicorn's errors reach it, its access lines do not (the request line replaces them)."""
        import uvicorn

        from flexroute import logs

        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        try:
            uvicorn.Config(app="x:y", access_log=False, log_config=None)
            logs.configure("json", "info")
            # uvicorn's protocol writes access lines exactly when this is true
            assert not logging.getLogger("uvicorn.access").hasHandlers()
            assert logging.getLogger("uvicorn.error").hasHandlers()
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
            logs._stop_listener()
