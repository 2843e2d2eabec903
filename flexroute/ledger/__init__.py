"""The fee ledger: one record per request that reached a provider, written exactly once."""

from __future__ import annotations

from flexroute.ledger.base import LedgerRecord, Store, open_store

__all__ = ["LedgerRecord", "Store", "open_store"]
