"""The sidecar proxy: ``create_app`` builds it, ``serve`` runs it with uvicorn."""

from __future__ import annotations

from flexroute.billing.choose import processor_for
from flexroute.billing.gate import BillingGate
from flexroute.billing.processors import PaymentProcessor
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.billing.webhooks import handle_event
from flexroute.catalog import Catalog
from flexroute.config import Settings
from flexroute.dashboard import build_dashboard
from flexroute.ledger import Store
from flexroute.limits import Limiter
from flexroute.proxy.app import ProxyApp
from flexroute.proxy.auth import SidecarAuth
from flexroute.proxy.billing import WebhookHandler
from flexroute.proxy.gateway import Gateway
from flexroute.runtime import build_runtime
from flexroute.tracing import Tracer
from flexroute.upstream import Upstream

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
    tracer: Tracer | None = None,
) -> ProxyApp:
    """The proxy with its shared resources (:func:`flexroute.runtime.build_runtime`), closed
    again at lifespan shutdown.

    Billable flex requests pass the billing gate (402 while the org is past-due); its cached
    states live ``gate_ttl`` seconds, and changes made in this process drop them at once.
    Gateway mode (flexroute keys in the store) caches keys for ``key_ttl`` seconds and limits
    requests with ``limiter`` (default: Redis if ``FLEXROUTE_REDIS_URL`` is set, else
    in-process). Traces follow the ``OTEL_*`` variables unless ``tracer`` is given.
    """
    runtime = build_runtime(
        settings,
        upstream=upstream,
        store=store,
        catalog=catalog,
        limiter=limiter,
        gate_ttl=gate_ttl,
        tracer=tracer,
    )
    processor = processor_for(settings)  # one for the webhook and the Billing page
    webhook = _stripe_webhook(processor, runtime.store, runtime.gate)
    gateway = Gateway(settings, runtime.store, runtime.limiter, ttl=key_ttl)
    dashboard = build_dashboard(settings, runtime.store, runtime.gate, gateway.forget, processor)
    return ProxyApp(
        runtime.engine,
        SidecarAuth(settings),
        runtime.metrics,
        gateway,
        on_shutdown=runtime.aclose,
        stripe_webhook=webhook,
        writer=runtime.writer,
        background=runtime.background(),
        dashboard=dashboard,
    )


def _stripe_webhook(
    processor: PaymentProcessor, store: Store, gate: BillingGate
) -> WebhookHandler | None:
    if not isinstance(processor, StripeProcessor):
        return None
    stripe_processor = processor

    async def handle(payload: bytes, signature: str | None) -> str:
        return await handle_event(store, stripe_processor, payload, signature, gate.forget)

    return handle
