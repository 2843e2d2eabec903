"""The fee ledger: one record per request that reached a provider, written exactly once,
and the billing state (organisations, invoices) derived from it."""

from __future__ import annotations

from flexroute.ledger.base import (
    ACTIVE,
    PAST_DUE,
    Invoice,
    LedgerRecord,
    Org,
    Status,
    Store,
    UsageRow,
    period_of,
)
from flexroute.ledger.open import open_store, spool_path_for
from flexroute.ledger.spool import SpooledWriter

__all__ = [
    "ACTIVE",
    "PAST_DUE",
    "Invoice",
    "LedgerRecord",
    "Org",
    "SpooledWriter",
    "Status",
    "Store",
    "UsageRow",
    "open_store",
    "period_of",
    "spool_path_for",
]
