"""The organisation's web dashboard under ``/dashboard/`` (issue 15): Overview, Billing, Keys
and Requests for an organisation signed in with its flexroute key, and the operator's page
for ``FLEXROUTE_ADMIN_KEY``.

Modules, one idea each: :mod:`.http` (ASGI plumbing, security headers), :mod:`.sessions`
(sessions, cookies, CSRF), :mod:`.signin` (the sign-in flow and its throttle), :mod:`.app`
(route table and checks), :mod:`.queries` (what the pages show), :mod:`.chart` (the
Overview's SVG geometry), :mod:`.stripe_setup` (the card form's SetupIntent), and one module
per page family.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from flexroute.billing.gate import BillingGate
from flexroute.billing.processors import PaymentProcessor
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.config import Settings
from flexroute.dashboard.app import PREFIX, Dashboard, Handler, Page, Route
from flexroute.dashboard.billing_page import billing_page, invoice_csv, save_card, setup_card
from flexroute.dashboard.keys_page import create_key, keys_page, revoke_key, set_caps
from flexroute.dashboard.operator import mark_org_paid, operator_page
from flexroute.dashboard.pages import overview_page, request_page, requests_page
from flexroute.dashboard.sessions import Sessions
from flexroute.dashboard.signin import SignIn
from flexroute.dashboard.stripe_setup import CardSetup
from flexroute.ledger import Store

__all__ = ["PREFIX", "Dashboard", "build_dashboard"]


def _route(method: str, pattern: str, handler: Handler, operator: bool = False) -> Route:
    return Route(method, re.compile(pattern), handler, operator)


ROUTES = [
    _route("GET", r"/", overview_page),
    _route("GET", r"/billing", billing_page),
    _route("POST", r"/billing/setup", setup_card),
    _route("POST", r"/billing/card", save_card),
    _route("GET", r"/billing/invoices/(inv_[0-9a-f]+)\.csv", invoice_csv),
    _route("GET", r"/keys", keys_page),
    _route("POST", r"/keys/create", create_key),
    _route("POST", r"/keys/revoke", revoke_key),
    _route("POST", r"/keys/caps", set_caps),
    _route("GET", r"/requests", requests_page),
    _route("GET", r"/requests/([A-Za-z0-9_.:-]{1,200})", request_page),
    _route("GET", r"/operator", operator_page, operator=True),
    _route("POST", r"/operator/mark-paid", mark_org_paid, operator=True),
]


def build_dashboard(
    settings: Settings,
    store: Store,
    gate: BillingGate | None,
    forget_key: Callable[[str], None],
    processor: PaymentProcessor,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Dashboard:
    """The dashboard over the proxy's own store; ``gate`` and ``forget_key`` make a card,
    a mark-paid or a revocation take effect at once in this process; ``processor`` is the
    proxy's payment processor (Stripe's sets up cards)."""
    cards = None
    if isinstance(processor, StripeProcessor) and settings.stripe_publishable_key:
        on_change = None if gate is None else gate.forget
        cards = CardSetup(store, processor, settings.stripe_publishable_key, on_change)
    page = Page(settings, store, gate, forget_key, cards, clock)
    admin = None if settings.admin_key is None else settings.admin_key.get_secret_value()
    sessions = Sessions(store, admin, settings.dashboard_session_ttl, clock)
    return Dashboard(page, ROUTES, sessions, SignIn(page, sessions))
