"""The composition root: one function builds the engine and everything it shares.

The proxy (:func:`flexroute.proxy.create_app`), the SDK wrapper (:mod:`flexroute.transport`)
and any later face call :func:`build_runtime`, so every face gets the same engine with the
same features — the billing gate (402 for past-due organisations and for free credit used
up), the spend caps (:mod:`flexroute.billing.quota`, gateway mode), metrics, the ledger and
the upstream pool — and closes them the same way. Nothing else assembles an :class:`Engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio

from flexroute.billing.balance import BalanceLimit
from flexroute.billing.choose import processor_for
from flexroute.billing.gate import BillingGate
from flexroute.billing.quota import Quota
from flexroute.catalog import Catalog, default_catalog
from flexroute.config import Settings
from flexroute.engine import Engine
from flexroute.ledger import LedgerRecord, SpooledWriter, Store, open_store, spool_path_for
from flexroute.limits import Limiter, limiter_for
from flexroute.logs import request_line
from flexroute.metrics import Metrics
from flexroute.routing.advisor import Advisor
from flexroute.routing.sharing import Sharing, files_directory
from flexroute.tracing import Tracer, tracing_from_env
from flexroute.upstream import AiohttpUpstream, Bounds, Upstream

__all__ = ["Runtime", "build_runtime"]


@dataclass(frozen=True, slots=True)
class Runtime:
    """An engine and the resources it owns; ``aclose`` releases them all."""

    settings: Settings
    engine: Engine
    store: Store
    writer: SpooledWriter
    upstream: Upstream
    metrics: Metrics
    gate: BillingGate
    limiter: Limiter
    quota: Quota
    tracer: Tracer | None = None
    balance: BalanceLimit | None = None  # FLEXROUTE_BALANCE_LIMIT_USD; its task: background()
    # the flex availability model shared with other workers/replicas; its task: background()
    sharing: Sharing | None = None

    def background(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """Tasks a long-running face (the proxy, a batch run) runs for as long as it serves."""
        tasks = [] if self.balance is None else [self.balance.run]
        return tasks if self.sharing is None else [*tasks, self.sharing.run]

    async def aclose(self) -> None:
        with anyio.move_on_after(5):  # what the store can take back before it closes
            await self.writer.replay()
        await self.upstream.aclose()
        await self.limiter.aclose()
        await self.store.aclose()
        if self.sharing is not None:
            await self.sharing.aclose()
        if self.tracer is not None:
            await self.tracer.aclose()  # bounded: pending spans get 5 s to leave


def build_runtime(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    store: Store | None = None,
    catalog: Catalog | None = None,
    limiter: Limiter | None = None,
    gate_ttl: float = 2.0,
    quota_ttl: float = 2.0,
    on_record: Callable[[LedgerRecord], None] | None = None,
    tracer: Tracer | None = None,
    trace_kind: str = "server",
) -> Runtime:
    """Build the engine for ``settings``; given parts are used as they are (tests, the
    wrapper's own upstream), the rest made from the settings. ``on_record`` hears every
    ledger record after the metrics have counted it and its log line is written. Traces
    follow the ``OTEL_*`` variables (:mod:`flexroute.tracing`) unless ``tracer`` is given;
    the request's span is of ``trace_kind`` (``server`` in the proxy, ``internal`` in the
    SDK wrapper)."""
    tracer = tracer or tracing_from_env(kind=trace_kind)
    upstream = upstream or AiohttpUpstream(Bounds.from_settings(settings))
    store = store or open_store(settings.database_url)
    catalog = catalog or default_catalog()
    metrics = Metrics(catalog)
    gate = BillingGate(store, ttl=gate_ttl, credit=settings.free_credit_usd > 0)
    quota = Quota(
        store, fee_rate=settings.fee_rate, ttl=quota_ttl, timeout=settings.ledger_write_timeout
    )
    limiter = limiter or limiter_for(
        settings, on_fallback=lambda: metrics.count("ratelimit_fallback")
    )

    balance = None
    if settings.balance_limit_usd is not None:
        balance = BalanceLimit(
            store, processor_for(settings), settings.balance_limit_usd, on_change=gate.forget
        )

    def recorded(record: LedgerRecord) -> None:
        if balance is not None:
            balance.note(record)
        metrics.observe(record)
        request_line(record)
        if on_record is not None:
            on_record(record)

    writer = SpooledWriter(
        store,
        spool_path_for(settings.database_url, settings.spool_path),
        write_timeout=settings.ledger_write_timeout,
    )
    # One availability model per runtime: every face's flex requests learn from and share it.
    advisor = Advisor.from_settings(
        settings, on_plan=lambda key, plan: metrics.planned(key[0], key[1], plan.decision)
    )
    sharing = None
    directory = files_directory()  # --workers: the supervisor's shared directory
    if settings.redis_url or directory is not None:
        sharing = Sharing(
            advisor.availability,
            redis_url=settings.redis_url,
            prefix=settings.redis_prefix,
            directory=directory,
        )
    engine = Engine(
        settings,
        catalog,
        upstream,
        store,
        on_record=recorded,
        gate=gate,
        sink=writer,
        tracer=tracer,
        quota=quota,
        advisor=advisor,
    )
    return Runtime(
        settings, engine, store, writer, upstream, metrics, gate, limiter, quota, tracer, balance,
        sharing,
    )  # fmt: skip
