"""The sidecar proxy: ``create_app`` builds it, ``serve`` runs it with uvicorn."""

from __future__ import annotations

from flexroute.catalog import Catalog, default_catalog
from flexroute.config import Settings
from flexroute.engine import Engine
from flexroute.ledger import Store, open_store
from flexroute.metrics import Metrics
from flexroute.proxy.app import ProxyApp
from flexroute.proxy.auth import SidecarAuth
from flexroute.upstream import AiohttpUpstream, Upstream

__all__ = ["ProxyApp", "create_app"]


def create_app(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    store: Store | None = None,
    catalog: Catalog | None = None,
) -> ProxyApp:
    """The proxy with its shared resources, closed again at lifespan shutdown."""
    upstream = upstream or AiohttpUpstream()
    store = store or open_store(settings.database_url)
    metrics = Metrics()
    engine = Engine(
        settings, catalog or default_catalog(), upstream, store, on_record=metrics.observe
    )

    async def shutdown() -> None:
        await upstream.aclose()
        await store.aclose()

    return ProxyApp(engine, SidecarAuth(settings), metrics, on_shutdown=shutdown)
