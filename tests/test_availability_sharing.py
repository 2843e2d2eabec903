"""The flex availability model shared between processes (issue 13, item 4): summary files
between workers, real Redis between replicas, Redis down, and a real 2-worker ``serve``."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import openai
import pytest
import redis

from flexroute.routing.availability import Availability
from flexroute.routing.sharing import MAX_SHARED, Sharing
from flexroute.testing import RunningEmulator
from tests.test_limits import free_port, wait_healthy

KEY = ("openai", "gpt-5-mini", "default")
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"test-flex-{uuid.uuid4().hex[:10]}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{value}*"):
        client.delete(key)
    client.close()


def down(model: Availability, count: int = 5) -> None:
    """Flex refusing everything: ``count`` requests refused, and their retries too."""
    for _ in range(count):
        model.refused(KEY, None)
        model.refused(KEY, None, retry=True)


def known(model: Availability) -> float:
    """P(start within 1 s), which must be known."""
    p = model.estimate(KEY, 1.0).p
    assert p is not None
    return p


async def exchange_all(*sharings: Sharing) -> None:
    for sharing in sharings:
        await sharing.exchange()
    for sharing in sharings:
        await sharing.exchange()


class TestFiles:
    def test_workers_see_each_others_observations(self, tmp_path: Path) -> None:
        """What one worker saw is in the other's estimate after one exchange each."""
        a, b = Availability(memory=1e9), Availability(memory=1e9)
        sa = Sharing(a, directory=tmp_path, process="a")
        sb = Sharing(b, directory=tmp_path, process="b")
        down(a)
        anyio.run(exchange_all, sa, sb)
        assert b.estimate(KEY, 1.0).p == 0.0
        assert b.estimate(KEY, 1.0).observations == pytest.approx(10.0, abs=0.1)
        assert a.estimate(KEY, 1.0).observations == pytest.approx(10.0, abs=0.1)  # not twice

    def test_a_recovery_seen_by_one_worker_ends_the_outage_for_all(self, tmp_path: Path) -> None:
        """Both workers saw flex refuse; one worker's probe then sees it start. After one
        exchange the other predicts flex up as well (it forgets its own refusals), and the
        first no longer counts the other's refusals from before the recovery."""
        a, b = Availability(memory=1e9), Availability(memory=1e9)
        sa = Sharing(a, directory=tmp_path, process="a")
        sb = Sharing(b, directory=tmp_path, process="b")
        for model in (a, b):
            model.started(KEY, 0.1)
            down(model)
        anyio.run(exchange_all, sa, sb)
        assert b.estimate(KEY, 1.0).p == pytest.approx(0.2, abs=0.05)
        a.recovered(KEY)
        a.started(KEY, 0.1)
        assert a.estimate(KEY, 1.0).p == pytest.approx(1.0)  # b's refusals predate it
        anyio.run(sb.exchange)  # b reads a's summary (written at a's first exchange above)
        assert b.estimate(KEY, 1.0).p == pytest.approx(0.2, abs=0.05)  # not yet published
        anyio.run(exchange_all, sa, sb)
        assert b.estimate(KEY, 1.0).p == pytest.approx(1.0)
        b.refused(KEY, None)  # after the recovery: counts, here and in a
        anyio.run(exchange_all, sb, sa)
        assert known(a) < 1.0

    def test_an_old_recovery_leaves_a_new_workers_outage_alone(self, tmp_path: Path) -> None:
        """A worker that began observing after a peer's last recovery keeps its refusals."""
        a = Availability(memory=1e9)
        a.started(KEY, 0.1)
        a.recovered(KEY)
        sa = Sharing(a, directory=tmp_path, process="a")
        time.sleep(0.01)
        b = Availability(memory=1e9)
        down(b)
        sb = Sharing(b, directory=tmp_path, process="b")
        anyio.run(exchange_all, sa, sb)
        assert known(b) < 0.3
        assert known(a) < 0.3

    def test_a_dead_workers_file_is_ignored(self, tmp_path: Path) -> None:
        """A summary file not rewritten within the TTL is a dead worker's: left out."""
        a, b = Availability(), Availability()
        down(a)
        anyio.run(Sharing(a, directory=tmp_path, process="a").exchange)
        old = time.time() - 60
        os.utime(tmp_path / "a.json", (old, old))
        sb = Sharing(b, directory=tmp_path, process="b", ttl=10.0)
        anyio.run(sb.exchange)
        assert b.estimate(KEY, 1.0).p is None

    def test_a_torn_file_is_skipped(self, tmp_path: Path) -> None:
        """A file that is not a summary document is skipped, never an error."""
        (tmp_path / "x.json").write_text('{"models": [{"provider": 1')
        b = Availability()
        sb = Sharing(b, directory=tmp_path, process="b")
        anyio.run(sb.exchange)
        assert sb.peers == {}

    def test_the_document_is_bounded(self, tmp_path: Path) -> None:
        """At most MAX_SHARED models go into one process's summary."""
        a = Availability()
        for i in range(MAX_SHARED + 20):
            a.refused(("openai", f"m{i}", "default"), None)
        anyio.run(Sharing(a, directory=tmp_path, process="a").exchange)
        assert len(json.loads((tmp_path / "a.json").read_text())["models"]) == MAX_SHARED


class TestRedis:
    def test_replicas_share_through_redis(self, prefix: str) -> None:
        """Two processes with one Redis see each other's observations, each counted once."""
        a, b = Availability(memory=1e9), Availability(memory=1e9)
        sa = Sharing(a, redis_url=REDIS_URL, prefix=prefix, process="a")
        sb = Sharing(b, redis_url=REDIS_URL, prefix=prefix, process="b")

        async def go() -> None:
            down(a, 3)
            down(b, 3)
            await exchange_all(sa, sb)
            await sa.aclose()
            await sb.aclose()

        anyio.run(go)
        assert a.estimate(KEY, 1.0).observations == pytest.approx(12.0, abs=0.1)
        assert b.estimate(KEY, 1.0).observations == pytest.approx(12.0, abs=0.1)

    def test_the_summary_expires(self, prefix: str) -> None:
        """Each process's key carries a TTL, so a dead replica's summary goes away."""
        a = Availability()
        down(a)
        sa = Sharing(a, redis_url=REDIS_URL, prefix=prefix, process="a", ttl=5.0)
        anyio.run(sa.exchange)
        ttl = redis.Redis.from_url(REDIS_URL).pttl(f"{prefix}flex:a")
        assert 0 < ttl <= 5000

    def test_a_stray_key_under_the_prefix_is_no_error(self, prefix: str) -> None:
        """A key under the prefix that is not UTF-8 (nor a summary) is passed over; the
        other replicas' summaries are still read."""
        a, b = Availability(memory=1e9), Availability(memory=1e9)
        sa = Sharing(a, redis_url=REDIS_URL, prefix=prefix, process="a")
        sb = Sharing(b, redis_url=REDIS_URL, prefix=prefix, process="b")
        stray = redis.Redis.from_url(REDIS_URL)
        stray.set(prefix.encode() + b"flex:\xff\xfe", b"\x00not json")
        stray.close()

        async def go() -> None:
            down(a, 3)
            await exchange_all(sa, sb)
            await sa.aclose()
            await sb.aclose()

        anyio.run(go)
        assert b.estimate(KEY, 1.0).observations == pytest.approx(6.0, abs=0.1)

    def test_redis_down_keeps_the_own_model_without_errors(self) -> None:
        """Redis unreachable: the exchange returns quickly, peers are empty, the own model
        still predicts."""
        a = Availability()
        down(a)
        port = free_port()
        sa = Sharing(a, redis_url=f"redis://127.0.0.1:{port}/0", process="a", timeout=0.3)
        began = time.monotonic()
        anyio.run(sa.exchange)
        assert time.monotonic() - began < 3.0
        assert sa.failures == 1
        assert a.estimate(KEY, 1.0).p == 0.0


@contextlib.contextmanager
def two_workers(tmp_path: Path, emu: RunningEmulator, **settings: str) -> Iterator[str]:
    """`flexroute serve --workers 2` (no Redis) with ``settings``; yields its URL."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "FLEXROUTE_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "FLEXROUTE_OPENAI_BASE_URL": f"{emu.base_url}/v1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **settings,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flexroute.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def ask(url: str, verdict: str) -> str:
    """One chat request on a new connection (the kernel spreads those over both workers);
    its ``x-flexroute-reason`` ("" when flex served it)."""
    with openai.OpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}],
            extra_body={"start_within": "0.3s"}, extra_headers={"x-emulator": verdict},
        )  # fmt: skip
        return raw.headers.get("x-flexroute-reason", "")


def estimates(url: str, reads: int = 8) -> set[float | None]:
    """gpt-5-mini's P(start within 1 s) as ``reads`` fresh connections (both workers) see it."""
    seen = set()
    for _ in range(reads):
        with urllib.request.urlopen(f"{url}/flexroute/v1/flex", timeout=10) as response:  # noqa: S310
            models = {m["model"]: m for m in json.loads(response.read())["models"]}
        seen.add(models["gpt-5-mini"]["p_start_within"])
    return seen


REFUSE = "flex_refuse=always;retry_after=0.05"
START = "flex_queue=0.02;flex_refuse=0"


def test_two_workers_serve_one_model(tmp_path: Path, emu: RunningEmulator) -> None:
    """`flexroute serve --workers 2` (no Redis): refusals seen by either worker make both
    skip flex, as GET /flexroute/v1/flex on any worker shows."""
    no_probes = {"FLEXROUTE_FLEX_PROBE_INTERVAL": "600", "FLEXROUTE_FLEX_PROBE_EVERY": "1000"}
    with two_workers(tmp_path, emu, **no_probes) as url:
        for _ in range(4):
            ask(url, REFUSE)
        time.sleep(2.5)  # every worker publishes and reads about once a second
        assert [ask(url, REFUSE) for _ in range(8)] == ["flex-predicted-unavailable"] * 8
        files = list((tmp_path / "metrics" / "flex-availability").glob("*.json"))
        assert len(files) == 2
        assert estimates(url, 1) == {0.0}


def test_a_probe_in_one_worker_ends_the_skipping_in_both(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    """Flex refused in both workers, then one worker's probe sees it start: within a couple
    of exchanges both workers predict flex up, neither still counting the refusals."""
    probes = {"FLEXROUTE_FLEX_PROBE_INTERVAL": "3", "FLEXROUTE_FLEX_PROBE_EVERY": "1"}
    with two_workers(tmp_path, emu, **probes) as url:
        for _ in range(4):
            ask(url, START)
        for _ in range(10):  # refused until both workers, having exchanged, predict it down
            for _ in range(4):
                ask(url, REFUSE)
            time.sleep(1.2)
            down = estimates(url)
            if all(p is not None and p < 0.2 for p in down):
                break
        assert all(p is not None and p < 0.2 for p in down), down
        time.sleep(3.5)  # probes may go again
        assert ask(url, START) == ""  # a probe, in one of the workers: flex started
        # the outage's refusals had faded the older starts: a second start makes the
        # estimate known again (and it counts no refusal)
        assert ask(url, START) == ""
        time.sleep(2.5)
        assert estimates(url) == {1.0}
