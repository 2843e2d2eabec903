"""`flexroute serve --workers 2` in gateway mode: real processes, real SDK traffic against the
emulator, Redis rate limits shared exactly, one ledger record per request, and another
process's `billing mark-paid` seen promptly by every worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flexroute.cli import main
from flexroute.config import Settings
from flexroute.proxy import workers as workers_module
from flexroute.testing import RunningEmulator
from tests.gateway_env import SECRET, add_key, gateway_settings
from tests.test_billing import _past_due
from tests.test_gateway_canary import set_provider_keys
from tests.test_limits import free_port, wait_healthy

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def _env(db: Path, emu: RunningEmulator, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "FLEXROUTE_DATABASE_URL": f"sqlite:///{db}",
        "FLEXROUTE_OPENAI_BASE_URL": emu.base_url,
        "FLEXROUTE_GEMINI_BASE_URL": emu.base_url,
        "FLEXROUTE_SECRET_KEY": SECRET,
        **extra,
    }


def _chat(client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="gpt-5-mini", messages=MESSAGES, extra_body={"start_within": "5s"},
        extra_headers={"x-emulator": "flex_queue=0.01"},
    )  # fmt: skip


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)


def test_two_workers_share_limits_write_one_record_each_and_see_mark_paid(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    db = tmp_path / "ledger.sqlite3"
    settings = gateway_settings(tmp_path, emu.base_url, database_url=f"sqlite:///{db}")
    keys = {"acme": add_key(settings, "acme")[1], "beta": add_key(settings, "beta", "paid")[1]}
    for org in keys:
        set_provider_keys(f"sqlite:///{db}", org)
    port = free_port()
    env = _env(
        db, emu,
        FLEXROUTE_REDIS_URL="redis://127.0.0.1:6379/0",
        FLEXROUTE_REDIS_PREFIX=f"test-workers-{uuid.uuid4().hex}:",
        FLEXROUTE_RATE_LIMITS='{"free": 6}',
        FLEXROUTE_ADMIN_KEY="admin-secret",
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexroute.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        served = limited = 0
        for _ in range(10):  # a fresh connection each, so both workers take some
            try:
                _chat(_client(url, keys["acme"]))
                served += 1
            except openai.RateLimitError:
                limited += 1
        assert (served, limited) == (6, 4)  # not 2 x 6: the workers share Redis counters

        anyio.run(_past_due, f"sqlite:///{db}", "beta")
        time.sleep(0.2)  # past the gate TTL: both workers have seen past-due
        for _ in range(4):
            with pytest.raises(openai.APIStatusError) as raised:
                _chat(_client(url, keys["beta"]))
            assert raised.value.status_code == 402
        subprocess.run(
            [sys.executable, "-m", "flexroute.cli", "billing", "mark-paid", "beta"],
            env=_env(db, emu), capture_output=True, check=True,
        )  # fmt: skip
        paid = time.monotonic()
        for _ in range(4):  # fresh connections: whichever worker takes it lets beta through
            _chat(_client(url, keys["beta"]))
        # the gate re-reads after 0.05 s; generous for a loaded machine, far below the old 2 s
        assert time.monotonic() - paid < 1.5
        # any worker's /metrics counts both workers' requests (prometheus multiprocess mode)
        scraped = httpx.get(
            f"{url}/metrics", headers={"authorization": "Bearer admin-secret"}, timeout=30
        )
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(scraped.text):
            if family.name == "flexroute_requests":
                for sample in family.samples:
                    if sample.name == "flexroute_requests_total":
                        org_route = sample.labels["route"]
                        totals[org_route] = totals.get(org_route, 0) + sample.value
        assert sum(totals.values()) == 6 + 4  # acme's 6 and beta's 4 that reached a provider
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    log = err.decode()
    assert proc.returncode == 0, log[-2000:]
    start = next(json.loads(line) for line in log.splitlines() if '"workers"' in line)
    assert start["workers"] == 2
    assert log.count("Started server process") == 2
    with sqlite3.connect(db) as conn:  # every worker flushed its ledger at SIGTERM
        rows = dict(conn.execute(
            "SELECT org_id, count(*) FROM requests WHERE request_id NOT LIKE 'seed-%' "
            "GROUP BY org_id"
        ).fetchall())  # fmt: skip
    assert rows == {"acme": 6, "beta": 4}


def test_gateway_workers_without_redis_refused_in_one_line(
    tmp_path: Path, emu: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ledger.sqlite3"
    settings = gateway_settings(tmp_path, emu.base_url, database_url=f"sqlite:///{db}")
    add_key(settings, "acme")
    os.environ.update(_env(db, emu))
    try:
        assert main(["serve", "--workers", "2", "--port", str(free_port())]) == 2
    finally:
        for name in _env(db, emu):
            if name.startswith("FLEXROUTE_"):
                del os.environ[name]
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "FLEXROUTE_REDIS_URL" in err
    assert "--workers 2" in err


class TestDefaultCount:
    """`serve` without --workers: one per CPU where shared state is shared, else one."""

    def test_sidecar_uses_every_cpu(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Sidecar mode shares nothing but the ledger: one worker per CPU."""
        monkeypatch.setattr(workers_module, "available_cpus", lambda: 4)
        sidecar = Settings(database_url=f"sqlite:///{tmp_path / 'l.sqlite3'}")
        assert workers_module.worker_count(None, sidecar, gateway=False) == (4, "")

    def test_gateway_runs_one_and_says_why(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Gateway limits are exact in one process: one worker, and the reason with the fix."""
        monkeypatch.setattr(workers_module, "available_cpus", lambda: 4)
        alone = Settings(database_url=f"sqlite:///{tmp_path / 'l.sqlite3'}")
        count, why = workers_module.worker_count(None, alone, gateway=True)
        assert count == 1
        assert "not 4, one per CPU" in why
        assert "set FLEXROUTE_REDIS_URL" in why
        shared = alone.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})
        count, why = workers_module.worker_count(None, shared, gateway=True)
        assert count == 1
        assert "choose --workers N" in why

    def test_an_explicit_count_wins(self, tmp_path: Path) -> None:
        """--workers, then FLEXROUTE_WORKERS, over the default."""
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'l.sqlite3'}", workers=3)
        assert workers_module.worker_count(None, settings, gateway=False) == (3, "")
        assert workers_module.worker_count(1, settings, gateway=False) == (1, "")


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {child for child, ppid in parents.items() if ppid == parent}
        found |= kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_default_sidecar_runs_a_worker_per_cpu_that_dies_with_its_parent(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    """No --workers in sidecar mode: one worker per CPU; SIGKILL the supervisor and the
    workers stop too, rather than serving on as orphans."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "FLEXROUTE_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "FLEXROUTE_OPENAI_BASE_URL": emu.base_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexroute.cli", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        children = _descendants(proc.pid)
        assert children
        proc.kill()
        _, err = proc.communicate(timeout=60)  # the workers hold stderr until they exit
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
    start = next(json.loads(line) for line in err.decode().splitlines() if '"workers"' in line)
    assert start["workers"] == workers_module.available_cpus()
