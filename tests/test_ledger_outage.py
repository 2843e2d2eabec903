"""Ledger outages: the answer goes to the client, the record to the spool, and from there
into the store exactly once when it is back (issue 11, item 5)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

from flexroute.ledger import open_store
from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.conftest import Proxy, make_settings
from tests.tcp_cutter import tcp_cutter

HI: list[Any] = [{"role": "user", "content": "hi"}]


def ask(client: openai.OpenAI) -> tuple[str, float]:
    """One flex chat; its request id and how long the answer took."""
    began = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=HI, extra_body={"start_within": "5s"}
    )
    assert raw.parse().choices[0].message.content
    return raw.headers["x-flexroute-request-id"], time.monotonic() - began


def count_records(url: str, ids: list[str]) -> dict[str, int]:
    """How many times each request id is in the store (a record is one row or none)."""

    async def main() -> dict[str, int]:
        store = open_store(url)
        try:
            return {i: int(await store.get(i) is not None) for i in ids}
        finally:
            await store.aclose()

    return anyio.run(main)


def health(proxy: Proxy) -> dict[str, Any]:
    data: dict[str, Any] = proxy.get("/flexroute/v1/health")
    return data


class TestPostgresCut:
    def test_answers_keep_coming_and_every_record_lands_once(
        self, tmp_path: Path, emulator: Any, pg_url: str
    ) -> None:
        """PostgreSQL blackholed mid-load: requests answer in bounded time, records spool,
        and after the cut every request id is in the store exactly once."""
        emulator.reset()
        with tcp_cutter("127.0.0.1", 5432) as cutter:
            cut_url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{cutter.port}")
            settings = make_settings(
                tmp_path,
                emulator.base_url,
                database_url=cut_url,
                spool_path=str(tmp_path / "spool.jsonl"),
                ledger_write_timeout=1.0,
            )
            with serve_in_thread(create_app(settings)) as url:
                proxy = Proxy(url, settings)
                client = proxy.client(timeout=30)
                ids = [ask(client)[0] for _ in range(3)]
                cutter.blackhole = True
                during = [ask(client) for _ in range(6)]
                ids += [i for i, _ in during]
                assert max(took for _, took in during) < 10  # one bounded wait, then the spool
                assert health(proxy)["ledger"]["spool_depth"] >= 5
                cutter.blackhole = False
                cutter.cut()  # the pool's connections were left mid-query: reset them
                deadline = time.monotonic() + 30
                while health(proxy)["ledger"]["spool_depth"] > 0:
                    assert time.monotonic() < deadline, "the spool was never replayed"
                    ids.append(ask(client)[0])
                    time.sleep(0.3)
        assert set(count_records(pg_url, ids).values()) == {1}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (room for a WAL) of the test's own (the machine runs tests as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # noqa: S607


class TestDiskFull:
    def test_a_full_disk_spools_and_replays_once_space_is_back(
        self, tmp_path: Path, emulator: Any, small_disk: Path
    ) -> None:
        """SQLite on a full filesystem: answers still arrive; records wait in the spool on
        another disk and land in the ledger, once each, when space is freed."""
        emulator.reset()
        db = small_disk / "ledger.sqlite3"
        settings = make_settings(
            tmp_path,
            emulator.base_url,
            database_url=f"sqlite:///{db}",
            spool_path=str(tmp_path / "spool.jsonl"),
        )
        with serve_in_thread(create_app(settings)) as url:
            proxy = Proxy(url, settings)
            client = proxy.client(timeout=30)
            ids = [ask(client)[0]]
            filler = small_disk / "filler"
            with filler.open("wb") as file:
                try:
                    while True:
                        file.write(b"\0" * 65536)
                        file.flush()
                except OSError:
                    pass
            ids += [ask(client)[0] for _ in range(40)]  # enough to need new pages
            assert health(proxy)["ledger"]["spool_depth"] > 0
            os.remove(filler)
            deadline = time.monotonic() + 30
            while health(proxy)["ledger"]["spool_depth"] > 0:
                assert time.monotonic() < deadline, "the spool was never replayed"
                ids.append(ask(client)[0])
                time.sleep(0.2)
        assert set(count_records(settings.database_url, ids).values()) == {1}
