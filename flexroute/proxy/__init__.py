"""The sidecar proxy: ``create_app`` builds it, ``serve`` runs it with uvicorn."""

from __future__ import annotations

from flexroute.billing.gate import BillingGate
from flexroute.billing.processors import processor_for
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.billing.webhooks import handle_event
from flexroute.catalog import Catalog, default_catalog
from flexroute.config import Settings
from flexroute.engine import Engine
from flexroute.ledger import Store, open_store
from flexroute.limits import Limiter, limiter_for
from flexroute.metrics import Metrics
from flexroute.proxy.app import ProxyApp
from flexroute.proxy.auth import SidecarAuth
from flexroute.proxy.billing import WebhookHandler
from flexroute.proxy.gateway import Gateway
from flexroute.upstream import AiohttpUpstream, Upstream

__all__ = ["ProxyApp", "create_app"]


def create_app(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    store: Store | None = None,
    catalog: Catalog | None = None,
    gate_ttl: float = 2.0,
    limiter: Limiter | None = None,
    key_ttl: float = 5.0,
) -> ProxyApp:
    """The proxy with its shared resources, closed again at lifespan shutdown.

    Billable flex requests pass the billing gate (402 while the org is past-due); its cached
    states live ``gate_ttl`` seconds, and changes made in this process drop them at once.
    Gateway mode (flexroute keys in the store) caches keys for ``key_ttl`` seconds and limits
    requests with ``limiter`` (default: Redis if ``FLEXROUTE_REDIS_URL`` is set, else
    in-process).
    """
    upstream = upstream or AiohttpUpstream()
    store = store or open_store(settings.database_url)
    metrics = Metrics()
    gate = BillingGate(store, ttl=gate_ttl)
    engine = Engine(
        settings,
        catalog or default_catalog(),
        upstream,
        store,
        on_record=metrics.observe,
        gate=gate,
    )
    webhook = _stripe_webhook(settings, store, gate)
    limiter = limiter or limiter_for(
        settings, on_fallback=lambda: metrics.count("ratelimit_fallback")
    )
    gateway = Gateway(settings, store, limiter, ttl=key_ttl)

    async def shutdown() -> None:
        await upstream.aclose()
        await limiter.aclose()
        await store.aclose()

    return ProxyApp(
        engine,
        SidecarAuth(settings),
        metrics,
        gateway,
        on_shutdown=shutdown,
        stripe_webhook=webhook,
    )


def _stripe_webhook(settings: Settings, store: Store, gate: BillingGate) -> WebhookHandler | None:
    processor = processor_for(settings)
    if not isinstance(processor, StripeProcessor):
        return None
    stripe_processor = processor

    async def handle(payload: bytes, signature: str | None) -> str:
        return await handle_event(store, stripe_processor, payload, signature, gate.forget)

    return handle
