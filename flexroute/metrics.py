"""Prometheus metrics (``prometheus_client``), rendered at ``GET /metrics``. Never holds secrets.

Every figure comes from a ledger record (``observe``, called once per record from the runtime's
``recorded`` callback, after the response) or a gateway event (``count``); the request path
itself touches no metric. Labels are bounded: ``provider`` is a registry name, ``model`` the
catalog's name for the model or ``"other"`` (a client's free text never becomes a label),
``route``/``reason``/``status`` are flexroute's own vocabularies. Keys, bodies and org ids are
never labels.

Metrics (all ``flexroute_``-prefixed):
``requests_total{provider,model,route,reason,status}``; histograms in seconds
``flex_wait_seconds``, ``fallback_lag_seconds`` (from the end of the last flex attempt — the
deadline or the giving up — to the standard attempt being sent, read from the attempt log),
``time_to_first_byte_seconds`` (receipt to the served attempt's first output/headers) and
``request_duration_seconds``; counters ``cost_usd_total``, ``saving_usd_total``,
``fee_usd_total`` by provider and model; event counters ``unauthorized_total``,
``ratelimited_total``, ``ratelimit_fallback_total`` (Redis unreachable); and the gauges the
caller passes to ``render`` (ledger spool depth, records lost; other features add their own).

Multiprocess mode (``flexroute serve --workers N``): the supervisor calls
``prepare_multiprocess(directory)`` BEFORE it starts workers — it empties the directory and sets
``PROMETHEUS_MULTIPROC_DIR`` so every worker (forked or spawned) writes its values to files
there; it must run before ``prometheus_client`` creates any metric in a process that forks. When
a worker exits the supervisor calls ``mark_process_dead(pid)``. With the variable set, any
worker's ``/metrics`` aggregates all processes' files with ``MultiProcessCollector``; the
``render`` gauges are computed by the scraping process at scrape time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flexroute.catalog import Catalog
from flexroute.ledger.base import LedgerRecord

_Labelled = Counter | Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER_MODEL = "other"

EVENTS = {
    "unauthorized": "Requests refused for a missing, unknown or revoked flexroute key.",
    "ratelimited": "Requests refused over a flexroute key's rate limit.",
    "ratelimit_fallback": "Rate-limit checks made in-process because Redis was unreachable.",
}

_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_TIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


def prepare_multiprocess(directory: str | Path) -> Path:
    """Empty ``directory`` (creating it) and point ``PROMETHEUS_MULTIPROC_DIR`` at it; call in
    the supervisor before any worker starts."""
    path = Path(directory)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live-gauge files (its counters stay counted)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    """One process's metrics; its own registry, so several runtimes in one process (tests)
    never clash."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self._catalog = catalog
        self._models: dict[tuple[str, str | None], str] = {}
        self._children: dict[tuple[_Labelled, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        by_model = ("provider", "model")
        self.requests = Counter(
            "flexroute_requests",
            "Requests that reached a provider.",
            ("provider", "model", "route", "reason", "status"),
            registry=reg,
        )
        self.flex_wait = Histogram(
            "flexroute_flex_wait_seconds",
            "Time from receipt to flex start or fallback.",
            by_model,
            buckets=_WAIT_BUCKETS,
            registry=reg,
        )
        self.fallback_lag = Histogram(
            "flexroute_fallback_lag_seconds",
            "Time from the last flex attempt's end (deadline or giving up) to the standard send.",
            ("provider",),
            buckets=_LAG_BUCKETS,
            registry=reg,
        )
        self.ttfb = Histogram(
            "flexroute_time_to_first_byte_seconds",
            "Time from receipt to the served attempt's first output (or its headers).",
            ("provider", "model", "route"),
            buckets=_TIME_BUCKETS,
            registry=reg,
        )
        self.duration = Histogram(
            "flexroute_request_duration_seconds",
            "Time from receipt to the ledger record (the whole request).",
            ("provider", "model", "route"),
            buckets=_TIME_BUCKETS,
            registry=reg,
        )
        self.cost = Counter("flexroute_cost_usd", "Cost paid to providers.", by_model, registry=reg)
        self.saving = Counter(
            "flexroute_saving_usd", "Saving against the standard price.", by_model, registry=reg
        )
        self.fee = Counter(
            "flexroute_fee_usd", "Fees computed (20% of the saving).", by_model, registry=reg
        )
        self.decisions = Counter(
            "flexroute_flex_decisions",
            "Adaptive flex plans: flex, shortened, skipped (predicted unavailable) or probe.",
            ("provider", "model", "decision"),
            registry=reg,
        )
        self.events = {
            event: Counter(f"flexroute_{event}", text, registry=reg)
            for event, text in EVENTS.items()
        }

    def model_label(self, provider: str, model: str | None) -> str:
        """The catalog's name for the model, or ``"other"``: the label's values stay bounded."""
        key = (provider, model)
        label = self._models.get(key)
        if label is None:
            prices = None
            if model and self._catalog is not None:
                prices = self._catalog.lookup(provider, model)
            label = prices.model if prices is not None else OTHER_MODEL
            if prices is not None:  # only catalog names are remembered: the cache stays bounded
                self._models[key] = label
        return label

    def planned(self, provider: str, model: str, decision: str) -> None:
        """One adaptive flex plan (see :class:`flexroute.routing.adaptive.Plan`)."""
        self._child(self.decisions, provider, self.model_label(provider, model), decision).inc()

    def count(self, event: str) -> None:
        """One more of a gateway event (see ``EVENTS``)."""
        self.events[event].inc()

    def observe(self, record: LedgerRecord) -> None:
        provider = record.provider
        model = self.model_label(provider, record.model)
        child = self._child
        child(
            self.requests, provider, model, record.route, record.reason or "", record.status
        ).inc()
        if record.flex_wait_ms is not None:
            child(self.flex_wait, provider, model).observe(record.flex_wait_ms / 1000)
        lag = fallback_lag_ms(record.attempt_log)
        if lag is not None:
            child(self.fallback_lag, provider).observe(lag / 1000)
        first = first_byte_ms(record.attempt_log)
        if first is not None:
            child(self.ttfb, provider, model, record.route).observe(first / 1000)
        elapsed = (record.completed_at - record.received_at).total_seconds()
        child(self.duration, provider, model, record.route).observe(max(elapsed, 0.0))
        if record.actual_cost:
            child(self.cost, provider, model).inc(float(record.actual_cost))
        if record.saving > 0:
            child(self.saving, provider, model).inc(float(record.saving))
        if record.fee > 0:
            child(self.fee, provider, model).inc(float(record.fee))

    def _child(self, metric: _Labelled, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: labels() validates and locks on every call
        (half of ``observe``); the label values are bounded (``model_label``), so is this."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self, gauges: dict[str, tuple[str, int]] | None = None) -> bytes:
        """Prometheus text; ``gauges`` adds ``flexroute_<name>`` gauges (help, value). In
        multiprocess mode the counters and histograms are every process's, aggregated."""
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        # Collected once (in multiprocess mode: every process's files read once); the probe
        # share is derived from the same decision counters the text shows.
        families = list(registry.collect())
        families += [
            GaugeMetricFamily(f"flexroute_{name}", help_text, value=value)
            for name, (help_text, value) in (gauges or {}).items()
        ]
        share = probe_share(families)
        if share is not None:
            families.append(share)
        return generate_latest(_Families(families))


class _Families(Collector):
    """Metric families already collected, for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def probe_share(families: Iterable[Metric]) -> GaugeMetricFamily | None:
    """``flexroute_flex_probe_share{provider,model}``: of the requests flex was predicted
    unavailable for, the share that probed it (probes ÷ (probes + skipped)), from the
    decision counters among ``families`` (every process's, in multiprocess mode)."""
    counts: dict[tuple[str, str], list[float]] = {}
    for family in families:
        if family.name != "flexroute_flex_decisions":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            decision = sample.labels.get("decision")
            pair = counts.setdefault((sample.labels["provider"], sample.labels["model"]), [0, 0])
            if decision == "probe":
                pair[0] += sample.value
            elif decision == "skipped":
                pair[1] += sample.value
    gauge = GaugeMetricFamily(
        "flexroute_flex_probe_share",
        "Share of requests predicted flex-unavailable that probed flex.",
        labels=("provider", "model"),
    )
    for (provider, model), (probes, skipped) in sorted(counts.items()):
        if probes + skipped > 0:
            gauge.add_metric((provider, model), probes / (probes + skipped))
    return gauge if gauge.samples else None


def fallback_lag_ms(attempt_log: Iterable[dict[str, object]]) -> float | None:
    """From the end of the flex attempt just before the standard one to its start, or None."""
    previous: dict[str, object] | None = None
    for entry in attempt_log:
        if entry.get("tier") != "flex" and previous is not None and previous.get("tier") == "flex":
            began, ended = entry.get("began_ms"), previous.get("ended_ms")
            if isinstance(began, int | float) and isinstance(ended, int | float):
                return max(float(began) - float(ended), 0.0)
        previous = entry
    return None


_SERVED = frozenset({"started", "streaming", "answered"})


def first_byte_ms(attempt_log: Iterable[dict[str, object]]) -> float | None:
    """When the served attempt had its first output (flex) or response (standard), or None."""
    for entry in attempt_log:
        if entry.get("outcome") in _SERVED:
            ended = entry.get("ended_ms")
            if isinstance(ended, int | float):
                return float(ended)
    return None
