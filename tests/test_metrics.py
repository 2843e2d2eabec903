"""/metrics scraped with prometheus_client's own parser after real SDK traffic, and the
multiprocess mode: two real processes writing to one directory, aggregated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from flexroute.metrics import fallback_lag_ms, first_byte_ms
from tests.conftest import Proxy
from tests.test_proxy_openai import chat


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and wanted <= ls)


class TestScrape:
    def test_sdk_traffic_is_counted_by_provider_model_route_reason_status(
        self, proxy: Proxy
    ) -> None:
        """Flex served, flex fallen back at the deadline and an unknown model each show up."""
        client = proxy.client()
        chat(client, "flex_queue=0.05", extra_body={"start_within": "2s"})
        chat(client, "flex_queue=5", extra_body={"start_within": "200ms"})
        chat(client, "", model="gpt-made-up-sk-secret-model")
        scrape = samples(proxy.get("/metrics"))
        flex = {"provider": "openai", "model": "gpt-5-mini", "status": "ok"}
        assert value(scrape, "flexroute_requests_total", route="flex", **flex) == 1
        assert value(scrape, "flexroute_requests_total", route="fallback", **flex) == 1
        assert value(scrape, "flexroute_requests_total", model="other") == 1
        assert not any("sk-secret" in v for _, ls in scrape for _, v in ls)
        assert value(scrape, "flexroute_flex_wait_seconds_count", provider="openai") == 2
        assert value(scrape, "flexroute_fallback_lag_seconds_count", provider="openai") == 1
        lag = value(scrape, "flexroute_fallback_lag_seconds_sum", provider="openai")
        assert 0 <= lag < 5
        assert value(scrape, "flexroute_time_to_first_byte_seconds_count") == 3
        assert value(scrape, "flexroute_request_duration_seconds_count") == 3
        assert value(scrape, "flexroute_saving_usd_total", model="gpt-5-mini") > 0
        fee = value(scrape, "flexroute_fee_usd_total", model="gpt-5-mini")
        saving = value(scrape, "flexroute_saving_usd_total", model="gpt-5-mini")
        assert abs(fee - saving * 0.2) < 1e-9
        assert value(scrape, "flexroute_cost_usd_total", model="gpt-5-mini") > 0
        assert ("flexroute_ledger_spool_depth", frozenset()) in scrape

    def test_lag_and_first_byte_come_from_the_attempt_log(self) -> None:
        """The lag is the gap from the last flex attempt's end to the standard one's start."""
        log = (
            {"tier": "flex", "began_ms": 1.0, "ended_ms": 200.0, "outcome": "refused"},
            {"tier": "standard", "began_ms": 203.5, "ended_ms": 250.0, "outcome": "answered"},
        )
        assert fallback_lag_ms(log) == 3.5
        assert first_byte_ms(log) == 250.0
        assert fallback_lag_ms(log[1:]) is None


WORKER = """
import sys
from decimal import Decimal
import datetime as dt
from flexroute.catalog import default_catalog
from flexroute.ledger.base import LedgerRecord
from flexroute.metrics import Metrics

metrics = Metrics(default_catalog())
now = dt.datetime.now(dt.UTC)
for _ in range(int(sys.argv[1])):
    metrics.observe(LedgerRecord(
        request_id="r", provider="openai", endpoint="chat", model="gpt-5-mini", route="flex",
        reason=None, tier_requested="flex", tier_served="flex", start_within_ms=1000,
        flex_wait_ms=10, attempts=1, usage=None, standard_cost=Decimal("0.002"),
        actual_cost=Decimal("0.001"), saving=Decimal("0.001"), fee=Decimal("0.0002"),
        status="ok", http_status=200, received_at=now, completed_at=now))
metrics.count("ratelimited")
"""


class TestMultiprocess:
    def test_two_processes_writing_one_directory_are_aggregated(self, tmp_path: Path) -> None:
        """Each process counts its own; a render in a third sees the sum."""
        directory = tmp_path / "prom"
        code = (
            "from flexroute.metrics import prepare_multiprocess; import sys; "
            "prepare_multiprocess(sys.argv[1])"
        )
        subprocess.run([sys.executable, "-c", code, str(directory)], check=True, timeout=60)
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        workers = [
            subprocess.Popen([sys.executable, "-c", WORKER, str(n)], env=env) for n in (3, 4)
        ]
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
        render = (
            "from flexroute.metrics import Metrics, mark_process_dead; import sys; "
            f"mark_process_dead({workers[0].pid}); "
            "sys.stdout.write(Metrics().render({'x': ('A gauge.', 5)}).decode())"
        )
        text = subprocess.run(
            [sys.executable, "-c", render], env=env, check=True, timeout=60,
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        scrape = samples(text)
        assert value(scrape, "flexroute_requests_total", route="flex", model="gpt-5-mini") == 7
        assert value(scrape, "flexroute_flex_wait_seconds_count") == 7
        assert abs(value(scrape, "flexroute_fee_usd_total") - 0.0014) < 1e-9
        assert value(scrape, "flexroute_ratelimited_total") == 2
        assert value(scrape, "flexroute_x") == 5
