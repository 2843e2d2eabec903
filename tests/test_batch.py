"""``flexroute batch``: the real command in a subprocess, against the emulator over loopback."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import pty
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from flexroute.batch.pacing import Pacer, backoff
from flexroute.config import Settings
from flexroute.proxy import create_app
from flexroute.testing import RunningEmulator, serve_in_thread
from tests.gateway_env import SECRET, gateway_settings, seed
from tests.recording_upstream import Answer, Seen, recording_upstream

ROOT = Path(__file__).parent.parent
CHAT = "/v1/chat/completions"


def chat_line(custom_id: str, model: str = "gpt-5-mini", **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"label {custom_id}"}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": messages, **body},
    }


def write_lines(path: Path, lines: list[Any]) -> Path:
    with path.open("w") as file:
        for line in lines:
            file.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def env_for(tmp_path: Path, openai_url: str, gemini_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXROUTE_")}
    env.update(
        FLEXROUTE_OPENAI_BASE_URL=openai_url,
        FLEXROUTE_GEMINI_BASE_URL=gemini_url or openai_url.removesuffix("/v1"),
        FLEXROUTE_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        OPENAI_API_KEY="sk-batch-test",
        GEMINI_API_KEY="gm-batch-test",
    )
    return env


def batch(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexroute.cli", "batch", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def outputs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ledger_rows(tmp_path: Path, where: str = "1=1") -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        query = f"SELECT request_id, status, route FROM requests WHERE {where}"  # noqa: S608
        return db.execute(query).fetchall()


@pytest.fixture
def emu_env(tmp_path: Path, emulator: RunningEmulator) -> dict[str, str]:
    emulator.reset()
    return env_for(tmp_path, f"{emulator.base_url}/v1")


class TestOpenAILines:
    def test_chat_lines_come_back_in_the_batch_output_format(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """Every custom_id gets one Batch API output line: id, custom_id, response, error."""
        ids = [f"task-{i}" for i in range(12)]
        source = write_lines(tmp_path / "in.jsonl", [chat_line(i) for i in ids])
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--json-summary"], emu_env)
        assert done.returncode == 0, done.stderr
        lines = outputs(out)
        assert sorted(line["custom_id"] for line in lines) == sorted(ids)
        for line in lines:
            assert set(line) == {"id", "custom_id", "response", "error"}
            assert line["error"] is None
            assert line["response"]["status_code"] == 200
            assert line["response"]["request_id"]
            assert line["response"]["body"]["object"] == "chat.completion"
            assert line["response"]["body"]["service_tier"] == "flex"
            assert line["id"].startswith("batch_req_")
        summary = json.loads(done.stdout)
        assert summary["requests"] == 12
        assert summary["served_flex"] == 12
        assert summary["errors"] == summary["bad_lines"] == 0
        assert float(summary["saving_usd"]) > 0
        assert float(summary["cost_usd"]) < float(summary["standard_cost_usd"])

    def test_each_output_id_names_its_ledger_record(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """``batch_req_<hex>`` is flexroute's request ``frq_<hex>``: one ok record per line."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"c{i}") for i in range(5)])
        out = tmp_path / "out.jsonl"
        assert batch([str(source), "-o", str(out)], emu_env).returncode == 0
        records = {rid: (status, route) for rid, status, route in ledger_rows(tmp_path)}
        assert len(records) == 5
        for line in outputs(out):
            request_id = "frq_" + line["id"].removeprefix("batch_req_")
            assert records[request_id] == ("ok", "flex")

    def test_a_line_with_its_own_tier_goes_as_written(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """--start-within is a default: a line asking for the standard tier is passed through."""
        lines = [chat_line("std", service_tier="default"), chat_line("flex")]
        source = write_lines(tmp_path / "in.jsonl", lines)
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--json-summary"], emu_env)
        assert done.returncode == 0, done.stderr
        tiers = {o["custom_id"]: o["response"]["body"]["service_tier"] for o in outputs(out)}
        assert tiers == {"std": "default", "flex": "flex"}
        assert json.loads(done.stdout)["passthrough"] == 1

    def test_responses_lines_are_routed_like_chat(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """/v1/responses lines run flex-first too."""
        line = {"custom_id": "r1", "method": "POST", "url": "/v1/responses",
                "body": {"model": "gpt-5-mini", "input": "hello"}}  # fmt: skip
        source = write_lines(tmp_path / "in.jsonl", [line])
        out = tmp_path / "out.jsonl"
        assert batch([str(source), "-o", str(out)], emu_env).returncode == 0
        (only,) = outputs(out)
        assert only["response"]["status_code"] == 200
        assert only["response"]["body"]["service_tier"] == "flex"


class TestGeminiLines:
    def test_gemini_lines_come_back_as_key_and_response(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """Gemini batch lines (key, request): the model from --model or request.model."""
        contents = [{"role": "user", "parts": [{"text": "label this"}]}]
        lines = [
            {"key": "g-default", "request": {"contents": contents}},
            {
                "key": "g-named",
                "request": {"model": "models/gemini-2.5-flash", "contents": contents},
            },
        ]
        source = write_lines(tmp_path / "in.jsonl", lines)
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--model", "gemini-2.5-flash-lite",
                      "--json-summary"], emu_env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        found = {o["key"]: o for o in outputs(out)}
        assert set(found) == {"g-default", "g-named"}
        for line in found.values():
            assert set(line) == {"key", "response"}
            assert line["response"]["candidates"][0]["content"]["parts"][0]["text"]
        assert found["g-named"]["response"]["modelVersion"] == "gemini-2.5-flash"
        assert found["g-default"]["response"]["modelVersion"] == "gemini-2.5-flash-lite"
        assert json.loads(done.stdout)["served_flex"] == 2

    def test_a_gemini_line_without_a_model_is_an_error_line(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """No --model and no request.model: a google.rpc.Status error line naming the fix."""
        line = {"key": "nomodel", "request": {"contents": [{"parts": [{"text": "x"}]}]}}
        source = write_lines(tmp_path / "in.jsonl", [line])
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out)], emu_env)
        assert done.returncode == 1
        (only,) = outputs(out)
        assert only["key"] == "nomodel"
        assert only["error"]["status"] == "INVALID_ARGUMENT"
        assert "--model" in only["error"]["message"]
        assert "line 1: " in done.stderr


class TestProviderErrors:
    def test_an_openai_error_answer_is_an_output_line_with_its_status(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """A provider's 400 is written as the Batch API writes it: response with status and
        body; it is not retried, and the run still exits 0."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line("e1")])
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--header", "x-emulator: status=400",
                      "--json-summary"], emu_env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        (only,) = outputs(out)
        assert only["response"]["status_code"] == 400
        assert only["response"]["body"]["error"]["message"]
        assert only["error"] is None
        summary = json.loads(done.stdout)
        assert (summary["errors"], summary["retries"]) == (1, 0)

    def test_a_gemini_error_answer_is_a_key_and_error_line(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """Gemini's error body becomes the line's google.rpc.Status."""
        line = {"key": "ge", "request": {"contents": [{"parts": [{"text": "x"}]}]}}
        source = write_lines(tmp_path / "in.jsonl", [line])
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--model", "gemini-2.5-flash",
                      "--header", "x-emulator: status=400"], emu_env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        (only,) = outputs(out)
        assert set(only) == {"key", "error"}
        assert only["error"]["code"] == 400
        assert only["error"]["status"] == "INVALID_ARGUMENT"


class TestBadLines:
    def test_bad_lines_are_reported_by_number_and_the_rest_goes_on(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """Bad lines: stderr names each by number; one with a custom_id also gets an error line."""
        lines: list[Any] = [
            chat_line("ok-1"),
            "{not json",
            {"custom_id": "wrong-url", "method": "POST", "url": "/v1/completions", "body": {}},
            chat_line("ok-1"),  # a repeated custom_id
            {"method": "POST", "url": CHAT, "body": {}},  # no custom_id
            chat_line("streamed", stream=True),
            "",
            chat_line("ok-2"),
        ]
        source = write_lines(tmp_path / "in.jsonl", lines)
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--json-summary"], emu_env)
        assert done.returncode == 1
        assert "line 2: not JSON" in done.stderr
        assert 'line 3: url "/v1/completions" is not one of' in done.stderr
        assert "line 4: custom_id 'ok-1' repeats line 1" in done.stderr
        assert "line 5: custom_id must be a non-empty string" in done.stderr
        assert "line 6: body.stream is true" in done.stderr
        found = {o["custom_id"]: o for o in outputs(out)}
        assert sorted(found) == ["ok-1", "ok-2", "streamed", "wrong-url"]
        assert len(outputs(out)) == 4  # ok-1 once
        assert found["ok-1"]["response"]["status_code"] == 200
        assert found["wrong-url"]["response"] is None
        assert found["wrong-url"]["error"]["code"] == "invalid_request"
        assert found["wrong-url"]["error"]["message"].startswith("line 3: ")
        summary = json.loads(done.stdout)
        assert summary["bad_lines"] == 5
        assert summary["requests"] == 2

    def test_an_existing_output_needs_resume(self, tmp_path: Path, emu_env: dict[str, str]) -> None:
        """A second run into a written file is refused unless it says --resume."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line("a")])
        out = tmp_path / "out.jsonl"
        assert batch([str(source), "-o", str(out)], emu_env).returncode == 0
        again = batch([str(source), "-o", str(out)], emu_env)
        assert again.returncode == 2
        assert "--resume" in again.stderr
        assert len(outputs(out)) == 1


class TestFailures:
    def test_via_without_a_proxy_is_refused_at_once(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """--via to a port nobody serves: one clear error before any line, not one per line."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line("x")])
        out = tmp_path / "out.jsonl"
        began = time.monotonic()
        done = batch([str(source), "-o", str(out), "--via", "http://127.0.0.1:9"], emu_env)
        assert done.returncode == 2
        assert "--via http://127.0.0.1:9: no answer" in done.stderr
        assert "flexroute serve" in done.stderr
        assert time.monotonic() - began < 60
        assert not out.exists() or out.read_text() == ""

    def test_an_unwritable_output_stops_the_run_with_one_line(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """A full disk (/dev/full) ends the run with the file named and the fix, no traceback."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"f{i}") for i in range(3)])
        done = batch([str(source), "-o", "/dev/full"], emu_env)
        assert done.returncode == 2
        assert "cannot write /dev/full: No space left on device" in done.stderr
        assert "--resume" in done.stderr
        assert "Traceback" not in done.stderr


class TestResume:
    def test_resume_sends_only_lines_without_output(
        self, tmp_path: Path, emu_env: dict[str, str], emulator: RunningEmulator
    ) -> None:
        """Lines already in the output are skipped; a torn last line is cut and sent again."""
        ids = [f"r{i}" for i in range(6)]
        source = write_lines(tmp_path / "in.jsonl", [chat_line(i) for i in ids])
        out = tmp_path / "out.jsonl"
        first = write_lines(tmp_path / "first.jsonl", [chat_line(i) for i in ids[:3]])
        assert batch([str(first), "-o", str(out)], emu_env).returncode == 0
        whole = out.read_bytes()
        torn = json.dumps({"id": "batch_req_x", "custom_id": "r3", "response": None})
        out.write_bytes(whole + torn.encode()[:40])  # cut inside the line: no newline
        emulator.reset()
        done = batch([str(source), "-o", str(out), "--resume", "--json-summary"], emu_env)
        assert done.returncode == 0, done.stderr
        assert "cut a torn last line" in done.stderr
        assert out.read_bytes().startswith(whole)
        assert sorted(o["custom_id"] for o in outputs(out)) == sorted(ids)
        assert len(emulator.log()) == 3  # r3, r4, r5 only
        summary = json.loads(done.stdout)
        assert (summary["skipped"], summary["requests"]) == (3, 3)


@pytest.mark.slow
class TestKilled:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_sigkill_at_seeded_moments_then_resume_writes_each_id_once(
        self, tmp_path: Path, emu_env: dict[str, str], seed: int
    ) -> None:
        """Killed with SIGKILL mid-run (twice, at seeded moments) and resumed: every custom_id
        has exactly one output line, and the ledger holds at most one extra record per line
        that was in flight at a kill."""
        rng = random.Random(seed)
        n, concurrency = 60, 4
        ids = [f"k{seed}-{i}" for i in range(n)]
        source = write_lines(tmp_path / "in.jsonl", [chat_line(i) for i in ids])
        out = tmp_path / "out.jsonl"
        args = [str(source), "-o", str(out), "--concurrency", str(concurrency), "--resume",
                "--header", "x-emulator: flex_queue=0.04;tokens=2"]  # fmt: skip
        kills = 0
        for _ in range(2):
            target = _count_lines(out) + rng.randint(1, 20)
            with _running(args, emu_env) as proc:
                deadline = time.monotonic() + 60
                while _count_lines(out) < target and proc.poll() is None:
                    assert time.monotonic() < deadline, "the batch made no progress"
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.08))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    kills += 1
        done = batch([*args, "--json-summary"], emu_env)
        assert done.returncode == 0, done.stderr
        written = [o["custom_id"] for o in outputs(out)]
        assert sorted(written) == sorted(ids)  # each exactly once
        assert kills >= 1
        ok = ledger_rows(tmp_path, "status = 'ok'")
        assert n <= len(ok) <= n + kills * concurrency
        records = {rid for rid, _, _ in ok}
        for line in outputs(out):
            assert "frq_" + line["id"].removeprefix("batch_req_") in records


class TestPacing:
    def test_rpm_spaces_the_starts(
        self, tmp_path: Path, emu_env: dict[str, str], emulator: RunningEmulator
    ) -> None:
        """--rpm 240 starts a line every 0.25 s, whatever the concurrency."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"p{i}") for i in range(6)])
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--rpm", "240", "--concurrency", "8"],
                     emu_env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        arrivals = sorted(e["arrived_at"] for e in emulator.log())
        assert len(arrivals) == 6
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert min(gaps) >= 0.2, gaps

    def test_a_429_pauses_every_start_for_its_retry_after(self, tmp_path: Path) -> None:
        """Standard-tier 429s with Retry-After: no line starts until it has passed, then each
        refused line is sent again and answered."""
        began: list[float] = []

        def answer(seen: Seen) -> Answer:
            now = time.monotonic()
            began.append(now)
            if now - began[0] < 0.3:
                return _refused(1.5)
            body = {"id": "c", "object": "chat.completion", "model": "gpt-5-mini",
                    "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                             "total_tokens": 5}}  # fmt: skip
            return Answer(200, json.dumps(body).encode(), delay=0.05)

        with recording_upstream(answer) as upstream:
            env = env_for(tmp_path, upstream.url)
            lines = [chat_line(f"q{i}") for i in range(8)]
            source = write_lines(tmp_path / "in.jsonl", lines)
            out = tmp_path / "out.jsonl"
            done = batch([str(source), "-o", str(out), "--start-within", "off",
                          "--concurrency", "4", "--json-summary"], env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert all(o["response"]["status_code"] == 200 for o in outputs(out))
        assert len(outputs(out)) == 8
        refused = [t for t in began if t - began[0] < 0.3]
        later = [t for t in began if t - began[0] >= 0.3]
        assert len(refused) == 4  # the first four in flight at once
        assert min(later) - max(refused) >= 1.4  # nothing started during the pause
        assert json.loads(done.stdout)["retries"] == 4


class TestAdaptive:
    def test_lines_skip_flex_once_it_is_predicted_down(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """The batch shares the engine's availability model: once flex refused the first
        lines, the rest go straight to standard instead of each spending its budget."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"d{i}") for i in range(10)])
        out = tmp_path / "out.jsonl"
        began = time.monotonic()
        done = batch([str(source), "-o", str(out), "--start-within", "1s", "--concurrency", "1",
                      "--header", "x-emulator: flex_refuse=always;retry_after=0.05",
                      "--json-summary"], emu_env)  # fmt: skip
        elapsed = time.monotonic() - began
        assert done.returncode == 0, done.stderr
        with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
            reasons = [r for (r,) in db.execute("SELECT reason FROM requests")]
        skipped = reasons.count("flex-predicted-unavailable")
        assert skipped >= 6, reasons
        assert elapsed < 10 * 1.0, elapsed  # not every line waited out its budget


class TestGatewayMode:
    def test_in_process_batch_runs_as_the_key_of_key_file(
        self, tmp_path: Path, emulator: RunningEmulator
    ) -> None:
        """With flexroute keys in the ledger, the batch needs --key-file; then it runs as that
        key's organisation, under that key's rate limit (the rest answered 429)."""
        emulator.reset()
        settings = gateway_settings(tmp_path, emulator.base_url)
        orgs = seed(settings, ("acme",))
        key_file = tmp_path / "key"
        key_file.write_text(orgs["acme"].key + "\n")
        env = env_for(tmp_path, f"{emulator.base_url}/v1")
        env.update(FLEXROUTE_SECRET_KEY=SECRET,
                   FLEXROUTE_RATE_LIMITS='{"free": 2, "elevated": 60, "paid": 300}')  # fmt: skip
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"o{i}") for i in range(6)])
        out = tmp_path / "out.jsonl"
        refused = batch([str(source), "-o", str(out)], env)
        assert refused.returncode == 2
        assert "--key-file" in refused.stderr
        done = batch([str(source), "-o", str(out), "--key-file", str(key_file), "--concurrency",
                      "1", "--max-retries", "0", "--json-summary"], env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        statuses = [o["response"]["status_code"] for o in outputs(out)]
        # 2 a minute: the run may cross one minute boundary, so 2 to 4 get through
        assert 2 <= statuses.count(200) <= 4
        assert statuses.count(429) == 6 - statuses.count(200)
        limited = [o for o in outputs(out) if o["response"]["status_code"] == 429]
        assert limited[0]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
        with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
            orgs_seen = db.execute("SELECT DISTINCT org_id FROM requests").fetchall()
        assert orgs_seen == [("acme",)]
        assert json.loads(done.stdout)["errors"] == statuses.count(429)

    def test_a_spend_cap_of_the_key_s_organisation_applies(
        self, tmp_path: Path, emulator: RunningEmulator
    ) -> None:
        """The organisation's monthly spend cap (`flexroute orgs caps`) refuses the batch's
        lines with 402 as it refuses the proxy's; a 402 is written, not retried."""
        emulator.reset()
        settings = gateway_settings(tmp_path, emulator.base_url)
        orgs = seed(settings, ("acme",))
        key_file = tmp_path / "key"
        key_file.write_text(orgs["acme"].key)
        env = env_for(tmp_path, f"{emulator.base_url}/v1")
        env["FLEXROUTE_SECRET_KEY"] = SECRET
        capped = subprocess.run(
            [sys.executable, "-m", "flexroute.cli", "orgs", "caps", "acme",
             "--spend-cap", "0.000000001"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert capped.returncode == 0, capped.stderr
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"cap{i}") for i in range(3)])
        out = tmp_path / "out.jsonl"
        done = batch([str(source), "-o", str(out), "--key-file", str(key_file),
                      "--json-summary"], env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = outputs(out)
        assert [o["response"]["status_code"] for o in lines] == [402, 402, 402]
        assert all(o["response"]["body"]["error"]["code"] == "spend_cap_reached" for o in lines)
        assert json.loads(done.stdout)["retries"] == 0
        assert emulator.log() == []  # nothing reached the provider


class TestForwardedLines:
    def test_embeddings_lines_are_forwarded_and_recorded(self, tmp_path: Path) -> None:
        """/v1/embeddings has no flex tier: the line goes as written, with the server's key."""
        vector = {"object": "list", "data": [{"object": "embedding", "index": 0,
                  "embedding": [0.1, 0.2]}], "model": "text-embedding-3-small",
                  "usage": {"prompt_tokens": 2, "total_tokens": 2}}  # fmt: skip
        with recording_upstream(lambda seen: Answer(200, json.dumps(vector).encode())) as up:
            line = {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings",
                    "body": {"model": "text-embedding-3-small", "input": "hi"}}  # fmt: skip
            source = write_lines(tmp_path / "in.jsonl", [line])
            out = tmp_path / "out.jsonl"
            done = batch([str(source), "-o", str(out)], env_for(tmp_path, up.url))
        assert done.returncode == 0, done.stderr
        (only,) = outputs(out)
        assert only["response"]["body"] == vector
        (seen,) = up.seen
        assert seen.raw_path == "/v1/embeddings"
        assert seen.header_values("authorization") == ["Bearer sk-batch-test"]
        assert "start_within" not in seen.json()
        assert [row[1] for row in ledger_rows(tmp_path)] == ["ok"]


class TestProgress:
    def test_a_terminal_gets_a_progress_bar_with_flex_share_and_saving(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """stderr on a terminal: the bar shows done/total, the flex share and the saving."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line(f"t{i}") for i in range(3)])
        out = tmp_path / "out.jsonl"
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "flexroute.cli", "batch", str(source), "-o", str(out)],
                env=emu_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=follower, timeout=120,
                check=False,
            )  # fmt: skip
            os.set_blocking(leader, False)
            drawn = b""
            with contextlib.suppress(BlockingIOError, OSError):
                while chunk := os.read(leader, 65536):
                    drawn += chunk
        finally:
            os.close(leader)
            os.close(follower)
        assert proc.returncode == 0
        text = drawn.decode(errors="replace")
        assert "3/3" in text
        assert "flex 100%" in text
        assert "saved $" in text
        assert b"served at flex" in proc.stdout

    def test_no_bar_when_stderr_is_not_a_terminal(
        self, tmp_path: Path, emu_env: dict[str, str]
    ) -> None:
        """Piped stderr stays clean: no bar, only the summary on stdout."""
        source = write_lines(tmp_path / "in.jsonl", [chat_line("n1")])
        done = batch([str(source), "-o", str(tmp_path / "out.jsonl")], emu_env)
        assert done.returncode == 0
        assert done.stderr == ""


class TestVia:
    def test_via_sends_every_line_through_a_running_proxy(
        self, tmp_path: Path, emulator: RunningEmulator
    ) -> None:
        """--via URL: the proxy's engine answers, its ledger records each line."""
        emulator.reset()
        settings = Settings.model_validate(
            {
                "openai_base_url": f"{emulator.base_url}/v1",
                "gemini_base_url": emulator.base_url,
                "database_url": f"sqlite:///{tmp_path / 'proxy.sqlite3'}",
                "openai_api_key": None,
            }
        )
        gemini = {"key": "vg", "request": {"contents": [{"parts": [{"text": "x"}]}]}}
        lines = [*(chat_line(f"v{i}") for i in range(4)), gemini]
        source = write_lines(tmp_path / "in.jsonl", lines)
        out = tmp_path / "out.jsonl"
        env = env_for(tmp_path, "http://127.0.0.1:9/v1")  # the batch's own upstream: unused
        with serve_in_thread(create_app(settings)) as url:
            done = batch([str(source), "-o", str(out), "--via", url, "--start-within", "5s",
                          "--model", "gemini-2.5-flash", "--json-summary"], env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        found = {o.get("custom_id", o.get("key")): o for o in outputs(out)}
        assert len(found) == 5
        assert all(found[f"v{i}"]["response"]["body"]["service_tier"] == "flex" for i in range(4))
        assert found["vg"]["response"]["candidates"]
        with sqlite3.connect(tmp_path / "proxy.sqlite3") as db:
            rows = db.execute("SELECT provider, tier_served FROM requests").fetchall()
        assert sorted(rows) == [("gemini", "flex")] + [("openai", "flex")] * 4
        assert not (tmp_path / "ledger.sqlite3").exists()
        assert json.loads(done.stdout)["served_flex"] == 5


def _refused(retry_after: float) -> Answer:
    body = {"error": {"message": "Rate limit reached", "type": "requests",
                      "code": "rate_limit_exceeded", "param": None}}  # fmt: skip
    return Answer(429, json.dumps(body).encode(), headers=[("retry-after", f"{retry_after:g}")])


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@contextmanager
def _running(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The batch command as a child process, killed if the block leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexroute.cli", "batch", *args, "--no-progress"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class TestPacer:
    def test_rpm_spaces_slots_evenly(self) -> None:
        """rpm 600: five starts take at least four intervals of 0.1 s."""
        pacer = Pacer(600)

        async def main() -> float:
            began = anyio.current_time()
            for _ in range(5):
                await pacer.slot()
            return anyio.current_time() - began

        assert anyio.run(main) >= 0.39

    def test_a_pause_holds_every_start_and_the_longest_wins(self) -> None:
        """pause(0.3) then pause(0.1): no start for 0.3 s; the shorter pause changes nothing."""
        pacer = Pacer(None)

        async def main() -> list[float]:
            began = anyio.current_time()
            pacer.pause(0.3)
            pacer.pause(0.1)
            starts: list[float] = []

            async def one() -> None:
                await pacer.slot()
                starts.append(anyio.current_time() - began)

            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(one)
            return starts

        starts = anyio.run(main)
        assert len(starts) == 4
        assert min(starts) >= 0.29
        assert pacer.pauses == 1

    def test_backoff_doubles_to_a_cap(self) -> None:
        """Without Retry-After: 1, 2, 4, 8, 16, then 30 s at most."""
        assert [backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
