"""Adaptive flex end to end (issue 13, items 2, 3 and 5): the real openai SDK through the proxy
and through ``flexroute.wrap()`` against the emulator, whose flex refuses as a test scripts."""

from __future__ import annotations

import contextlib
import http.server
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

from flexroute import Settings, wrap
from flexroute.ledger import open_store
from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.conftest import Proxy, attempts, make_settings

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
DOWN = "flex_refuse=always;retry_after=0.05"
TRIED = ("flex-unavailable", "flex-not-started-in-time")  # flex tried, not skipped


def chat(client: openai.OpenAI, emulator: str, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "gpt-5-mini")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("extra_body", {"start_within": "1s"})
    headers = {"x-emulator": emulator, **kwargs.pop("extra_headers", {})}
    return client.chat.completions.with_raw_response.create(extra_headers=headers, **kwargs)


@pytest.fixture
def adaptive(tmp_path: Path, emulator: Any) -> Iterator[Proxy]:
    """The proxy in adaptive mode with probes effectively off (one a minute, 1 in 1000)."""
    emulator.reset()
    settings = make_settings(
        tmp_path, emulator.base_url, flex_probe_interval=60.0, flex_probe_every=1000
    )
    with serve_in_thread(create_app(settings)) as url:
        yield Proxy(url, settings)


def flex_tries(emulator: Any, request_id: str) -> int:
    return sum(1 for e in attempts(emulator, request_id) if e["tier_requested"] == "flex")


def outage(client: openai.OpenAI, count: int = 2) -> None:
    """``count`` requests that meet flex refusing everything (each refused several times)."""
    for _ in range(count):
        raw = chat(client, DOWN)
        assert raw.headers["x-flexroute-route"] == "fallback"


class TestSkipping:
    def test_flex_refusing_everything_is_then_skipped(self, adaptive: Proxy, emulator: Any) -> None:
        """After flex refused every attempt, the next request goes straight to standard."""
        client = adaptive.client()
        outage(client)
        raw = chat(client, DOWN)
        request_id = raw.headers["x-flexroute-request-id"]
        assert raw.headers["x-flexroute-route"] == "fallback"
        assert raw.headers["x-flexroute-reason"] == "flex-predicted-unavailable"
        assert int(raw.headers["x-flexroute-flex-wait-ms"]) < 200
        assert flex_tries(emulator, request_id) == 0
        record = adaptive.record(request_id)
        assert record["flex_probability"] == 0.0
        assert record["reason"] == "flex-predicted-unavailable"
        assert raw.parse().choices[0].message.content

    def test_a_wave_of_refusals_that_retries_get_through_is_not_skipped(
        self, adaptive: Proxy, emulator: Any
    ) -> None:
        """Every request refused once (Retry-After 0.1 s), then started: half the attempts are
        refusals, but a 1 s budget holds the retry, so the estimate for it stays near 1 (not
        the half of the attempts that started) and requests alike go on being served by flex."""
        client = adaptive.client()
        wave = "flex_refuse=1;retry_after=0.1;flex_queue=0.01"
        for _ in range(6):
            raw = chat(client, wave)
            assert raw.headers["x-flexroute-route"] == "flex"
        record = adaptive.record(raw.headers["x-flexroute-request-id"])
        assert record["flex_probability"] > 0.9
        assert flex_tries(emulator, raw.headers["x-flexroute-request-id"]) == 2

    def test_a_refused_request_stops_where_retries_are_refused_too(
        self, adaptive: Proxy, emulator: Any
    ) -> None:
        """Flex taking first attempts now and then but never a retry: a request that is
        refused, and refused again on its retry, falls back then, not at its 4 s deadline."""
        client = adaptive.client()
        for _ in range(3):
            chat(client, "flex_queue=0.01")
            chat(client, DOWN)
        raw = chat(client, DOWN, extra_body={"start_within": "4s"})
        assert raw.headers["x-flexroute-reason"] == "flex-predicted-unavailable"
        assert int(raw.headers["x-flexroute-flex-wait-ms"]) < 2_000
        assert flex_tries(emulator, raw.headers["x-flexroute-request-id"]) == 2  # and retried

    def test_always_mode_still_tries_flex(self, adaptive: Proxy, emulator: Any) -> None:
        """x-flex-mode: always spends its budget on flex whatever the model predicts."""
        client = adaptive.client()
        outage(client)
        raw = chat(client, DOWN, extra_headers={"x-flex-mode": "always"})
        request_id = raw.headers["x-flexroute-request-id"]
        # refused until the deadline: it gives up on a refusal or is cut at the deadline
        assert raw.headers["x-flexroute-reason"] in TRIED
        assert flex_tries(emulator, request_id) >= 1
        assert adaptive.record(request_id)["flex_probability"] == 0.0

    def test_operator_always_mode_never_skips(self, tmp_path: Path, emulator: Any) -> None:
        """FLEXROUTE_FLEX_MODE=always: requests without the header spend their budget too."""
        emulator.reset()
        settings = make_settings(tmp_path, emulator.base_url, flex_mode="always")
        with serve_in_thread(create_app(settings)) as url:
            client = Proxy(url, settings).client()
            outage(client, 3)
            raw = chat(client, DOWN)
            assert flex_tries(emulator, raw.headers["x-flexroute-request-id"]) >= 1
            assert Proxy(url, settings).get("/flexroute/v1/flex")["mode"] == "always"

    def test_a_bad_mode_header_is_a_400_the_sdk_raises(self, adaptive: Proxy) -> None:
        """x-flex-mode: sometimes is refused in OpenAI's shape, naming header, value and modes."""
        with pytest.raises(openai.BadRequestError) as caught:
            chat(adaptive.client(), "", extra_headers={"x-flex-mode": "sometimes"})
        message = str(caught.value)
        assert "x-flex-mode" in message
        assert "'sometimes'" in message
        assert "'adaptive'" in message
        assert "'always'" in message

    def test_a_calm_model_keeps_going_to_flex(self, adaptive: Proxy) -> None:
        """Flex that starts quickly keeps every request on flex (probability recorded)."""
        client = adaptive.client()
        for _ in range(5):
            raw = chat(client, "flex_queue=0.01")
            assert raw.headers["x-flexroute-route"] == "flex"
        record = adaptive.record(raw.headers["x-flexroute-request-id"])
        assert record["flex_probability"] == 1.0


class TestShortening:
    def test_a_budget_is_cut_where_the_starts_end(self, adaptive: Proxy, emulator: Any) -> None:
        """Flex started within ~50 ms for 22 requests and two others waited out 2 s: the next
        request waits only as long as the starts took, reason flex-budget-shortened."""
        client = adaptive.client()
        budget = {"start_within": "2s"}
        for _ in range(22):
            assert (
                chat(client, "flex_queue=0.01", extra_body=budget).headers["x-flexroute-route"]
                == "flex"
            )
        for _ in range(2):
            chat(client, "flex_queue=5", extra_body=budget)
        raw = chat(client, "flex_queue=5", extra_body=budget)
        assert raw.headers["x-flexroute-route"] == "fallback"
        assert raw.headers["x-flexroute-reason"] == "flex-budget-shortened"
        assert int(raw.headers["x-flexroute-flex-wait-ms"]) < 1000
        record = adaptive.record(raw.headers["x-flexroute-request-id"])
        assert 0.2 <= record["flex_probability"] < 1.0
        assert flex_tries(emulator, raw.headers["x-flexroute-request-id"]) == 1


class TestStopping:
    """A request already waiting on flex when flex turns predicted down stops waiting."""

    def waiting(self, client: openai.OpenAI, budget: str, **kwargs: Any) -> dict[str, Any]:
        """A request whose flex is accepted and never starts, run in a thread: its result."""
        out: dict[str, Any] = {}

        def run() -> None:
            body = {"start_within": budget}
            out["raw"] = chat(client, "flex_queue=60", extra_body=body, **kwargs)

        thread = threading.Thread(target=run)
        thread.start()
        out["thread"] = thread
        return out

    def test_refusals_meanwhile_end_the_wait(self, adaptive: Proxy, emulator: Any) -> None:
        """Waiting on a 20 s budget, a request falls back once other requests' refusals tip
        the model, reason flex-predicted-unavailable; its flex attempt's record says it may be
        billed; an always request beside it waits on to its deadline."""
        client = adaptive.client()
        held = self.waiting(client, "20s")
        kept = self.waiting(client, "4s", extra_headers={"x-flex-mode": "always"})
        deadline = time.monotonic() + 15
        while len(emulator.log()) < 2 and time.monotonic() < deadline:  # both are waiting
            time.sleep(0.02)
        outage(client)  # refusals: flex is now predicted down for any budget
        held["thread"].join(20)
        raw = held["raw"]
        assert raw.headers["x-flexroute-route"] == "fallback"
        assert raw.headers["x-flexroute-reason"] == "flex-predicted-unavailable"
        assert int(raw.headers["x-flexroute-flex-wait-ms"]) < 15_000  # not its 20 s
        assert raw.parse().choices[0].message.content
        record = adaptive.record(raw.headers["x-flexroute-request-id"])
        first = record["attempt_log"][0]
        assert (first["tier"], first["outcome"], first["billed"]) == (
            "flex", "cancelled-at-deadline", "unknown",
        )  # fmt: skip
        kept["thread"].join(20)
        always = kept["raw"]
        assert always.headers["x-flexroute-reason"] == "flex-not-started-in-time"
        assert int(always.headers["x-flexroute-flex-wait-ms"]) >= 3_900

    def test_a_probe_refused_twice_falls_back(self, tmp_path: Path, emulator: Any) -> None:
        """A probe refused with Retry-After 3 s asks once more after it (whether flex takes
        a retry is what the model needs to know), and falls back at that second refusal
        instead of waiting 3 s more: two flex attempts, then standard."""
        emulator.reset()
        settings = make_settings(
            tmp_path, emulator.base_url, flex_probe_interval=0.0, flex_probe_every=1
        )
        with serve_in_thread(create_app(settings)) as url:
            client = Proxy(url, settings).client()
            outage(client)
            time.sleep(0.1)  # the outage's Retry-After (50 ms) has passed: probes may go
            raw = chat(client, "flex_refuse=always;retry_after=3", extra_body={"start_within": 8})
            request_id = raw.headers["x-flexroute-request-id"]
            assert raw.headers["x-flexroute-route"] == "fallback"
            assert raw.headers["x-flexroute-reason"] == "flex-predicted-unavailable"
            assert flex_tries(emulator, request_id) == 2
            wait = int(raw.headers["x-flexroute-flex-wait-ms"])
            assert 2_900 <= wait < 5_500  # the first Retry-After, not the second


class TestProbing:
    def test_a_probe_sees_flex_recover(self, tmp_path: Path, emulator: Any) -> None:
        """While flex is predicted down a probe still tries it, and its start ends the skipping."""
        emulator.reset()
        settings = make_settings(
            tmp_path, emulator.base_url, flex_probe_interval=0.0, flex_probe_every=2
        )
        with serve_in_thread(create_app(settings)) as url:
            proxy = Proxy(url, settings)
            client = proxy.client()
            outage(client)
            skipped = chat(client, "flex_queue=0.01")
            assert skipped.headers["x-flexroute-reason"] == "flex-predicted-unavailable"
            routes = [chat(client, "flex_queue=0.01").headers["x-flexroute-route"]]
            while routes[-1] != "flex" and len(routes) < 20:
                routes.append(chat(client, "flex_queue=0.01").headers["x-flexroute-route"])
            assert routes[-1] == "flex"
            metrics = proxy.get("/metrics")
            assert 'decision="probe"' in metrics
            assert "flexroute_flex_probe_share{" in metrics


class TestVisible:
    def test_flex_status_shows_each_model(self, adaptive: Proxy) -> None:
        """GET /flexroute/v1/flex reports the estimate, observations and state per model."""
        client = adaptive.client()
        outage(client)
        chat(client, "flex_queue=0.01", model="gpt-5-nano")
        status = adaptive.get("/flexroute/v1/flex?within=1s")
        models = {m["model"]: m for m in status["models"]}
        assert status["mode"] == "adaptive"
        assert models["gpt-5-mini"]["state"] in ("predicted-down", "refusing")
        assert models["gpt-5-mini"]["p_start_within"] == 0.0
        assert models["gpt-5-mini"]["refusals"] >= 2
        # flex refused the first attempts and their retries alike: both shares are 1
        assert models["gpt-5-mini"]["refused_first_share"] == 1.0
        assert models["gpt-5-mini"]["refused_retry_share"] == 1.0
        assert models["gpt-5-nano"]["refused_retry_share"] is None  # no retry seen
        assert models["gpt-5-nano"]["state"] == "unknown"
        assert models["gpt-5-nano"]["starts"] == pytest.approx(1.0, abs=0.05)

    def test_flex_status_prints_the_table(
        self, adaptive: Proxy, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`flexroute flex-status --url` prints one row per model with its state."""
        from flexroute.cli import main

        outage(adaptive.client())
        assert main(["flex-status", "--url", adaptive.url, "--within", "1s"]) == 0
        out = capsys.readouterr().out
        assert "flex mode adaptive" in out
        row = next(line for line in out.splitlines() if "gpt-5-mini" in line)
        assert "predicted-down" in row or "refusing" in row

    def test_flex_status_says_when_the_proxy_is_down(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unreachable --url exits 1 with the URL and the fix."""
        from flexroute.cli import main

        assert main(["flex-status", "--url", "http://127.0.0.1:9"]) == 1
        assert "--url" in capsys.readouterr().err

    @pytest.mark.parametrize("content", [None, "  \n"], ids=["missing", "empty"])
    def test_flex_status_names_a_bad_key_file(
        self, tmp_path: Path, content: str | None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing or empty --key-file is one line naming it (as for batch), no traceback."""
        from flexroute.cli import main

        key_file = tmp_path / "key"
        if content is not None:
            key_file.write_text(content)
        assert (
            main(["flex-status", "--url", "http://127.0.0.1:9", "--key-file", str(key_file)]) == 2
        )
        err = capsys.readouterr().err
        assert f"--key-file {key_file}" in err
        assert "Traceback" not in err

    def test_flex_status_keeps_the_key_off_a_redirect(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A --url that redirects elsewhere never gets the --key-file key sent there."""
        from flexroute.cli import main

        seen: list[str | None] = []

        class Elsewhere(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("authorization"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"mode": "adaptive", "models": []}')

            def log_message(self, *args: Any) -> None:
                pass

        with serve_handler(Elsewhere) as target:

            class Redirect(http.server.BaseHTTPRequestHandler):
                def do_GET(self) -> None:
                    self.send_response(302)
                    self.send_header("location", f"{target}{self.path}")
                    self.end_headers()

                def log_message(self, *args: Any) -> None:
                    pass

            with serve_handler(Redirect) as origin:
                key_file = tmp_path / "key"
                key_file.write_text("fr_secret_key_of_acme\n")
                assert main(["flex-status", "--url", origin, "--key-file", str(key_file)]) == 0
        assert seen == [None]

    def test_a_bad_within_is_a_400(self, adaptive: Proxy) -> None:
        """?within=soon is refused with a 400 naming the field, the value and the accepted
        forms, in OpenAI's error shape."""
        with pytest.raises(urllib.error.HTTPError) as caught:
            adaptive.get("/flexroute/v1/flex?within=soon")
        assert caught.value.code == 400
        error = json.loads(caught.value.read())["error"]
        assert error["param"] == "within"
        assert 'within "soon"' in error["message"]
        assert '"30s"' in error["message"]


class TestGateway:
    def test_one_organisations_refusals_never_steer_anothers(
        self, tmp_path: Path, emulator: Any
    ) -> None:
        """Providers limit per key: acme's refusals make acme skip flex, not globex, and
        each organisation's GET /flexroute/v1/flex shows only its own models."""
        from tests.gateway_env import gateway_settings, running_gateway

        emulator.reset()
        settings = gateway_settings(
            tmp_path, emulator.base_url, flex_probe_interval=60.0, flex_probe_every=1000
        )
        with running_gateway(settings) as gateway:
            acme, globex = gateway.openai("acme"), gateway.openai("globex")
            outage(acme)
            assert chat(acme, DOWN).headers["x-flexroute-reason"] == "flex-predicted-unavailable"
            tried = chat(globex, DOWN)  # tried flex (its own refusals may stop it: its own)
            assert flex_tries(emulator, tried.headers["x-flexroute-request-id"]) > 0
            request = urllib.request.Request(  # noqa: S310 -- the test's loopback gateway
                f"{gateway.url}/flexroute/v1/flex",
                headers={"authorization": f"Bearer {gateway.orgs['globex'].key}"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                models = json.loads(response.read())["models"]
            assert {m["org"] for m in models} == {"globex"}


class TestWrapper:
    def test_the_wrapper_skips_too_and_honours_the_header(
        self, settings: Settings, emulator: Any
    ) -> None:
        """flexroute.wrap() learns the same way; extra_headers x-flex-mode: always opts out."""
        bare = openai.OpenAI(api_key="sk-test", base_url=f"{emulator.base_url}/v1", max_retries=0)
        client = wrap(bare, start_within="1s", settings=settings)
        try:
            for _ in range(2):
                chat(client, DOWN, extra_body={})
            skipped = chat(client, DOWN, extra_body={})
            assert skipped.headers["x-flexroute-reason"] == "flex-predicted-unavailable"
            forced = chat(client, DOWN, extra_body={}, extra_headers={"x-flex-mode": "always"})
            assert forced.headers["x-flexroute-reason"] in TRIED
        finally:
            client.close()


class TestLedgerColumn:
    def test_an_existing_sqlite_file_gains_the_column(self, tmp_path: Path) -> None:
        """A ledger file from before flex_probability is migrated; old rows read as None."""
        path = tmp_path / "old.sqlite3"
        db = sqlite3.connect(path)
        from flexroute.ledger._sqlite_schema import MIGRATIONS

        for script in MIGRATIONS[:-1]:
            db.executescript(script)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
        db.commit()
        db.close()

        async def migrate() -> list[str]:
            store = open_store(f"sqlite:///{path}")
            try:
                await store.upgrade()
            finally:
                await store.aclose()
            columns = sqlite3.connect(path).execute("PRAGMA table_info(requests)").fetchall()
            return [c[1] for c in columns]

        assert "flex_probability" in anyio.run(migrate)

    def test_an_existing_postgres_table_gains_the_column(self, pg_url: str) -> None:
        """A PostgreSQL ledger from before flex_probability is migrated when first opened."""
        import psycopg

        from flexroute.ledger._postgres_schema import MIGRATIONS

        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE flexroute_schema (version INTEGER)")
            for number, script in enumerate(MIGRATIONS[:-1], start=1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement.encode())
                conn.execute("INSERT INTO flexroute_schema (version) VALUES (%s)", (number,))

        async def migrate() -> int:
            store = open_store(pg_url)
            try:
                return await store.upgrade()
            finally:
                await store.aclose()

        assert anyio.run(migrate) == len(MIGRATIONS)
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'requests' "
                "AND column_name = 'flex_probability' AND table_schema = current_schema()"
            ).fetchone()
        assert row is not None

    def test_both_stores_keep_the_probability(self, store_url: str) -> None:
        """SQLite and PostgreSQL store and return the predicted probability (and None)."""
        import datetime as dt
        from decimal import Decimal

        from flexroute.ledger import LedgerRecord

        now = dt.datetime.now(dt.UTC)

        def record(request_id: str, p: float | None) -> LedgerRecord:
            return LedgerRecord(
                request_id, "openai", "/v1/chat/completions", "gpt-5-mini", "fallback",
                "flex-predicted-unavailable", None, "default", 1000, 0, 1, None, None, None,
                Decimal(0), Decimal(0), "ok", 200, now, now, flex_probability=p,
            )  # fmt: skip

        async def roundtrip() -> tuple[float | None, float | None]:
            store = open_store(store_url)
            try:
                await store.record(record("r-p", 0.125))
                await store.record(record("r-none", None))
                a, b = await store.get("r-p"), await store.get("r-none")
            finally:
                await store.aclose()
            assert a is not None
            assert b is not None
            return a.flex_probability, b.flex_probability

        assert anyio.run(roundtrip) == (0.125, None)


@contextlib.contextmanager
def serve_handler(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server of ``handler`` in a thread: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
