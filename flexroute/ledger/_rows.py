"""Ledger records as database rows, shared by both backends (money as integer pico-USD,
times as UTC ISO strings that PostgreSQL casts to ``timestamptz``, JSON as text)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from flexroute.ledger.base import LedgerRecord
from flexroute.money import from_pico, to_pico
from flexroute.usage import Usage

COLUMNS = (
    "request_id, org_id, key_id, provider, endpoint, model, route, reason, tier_requested, "
    "tier_served, start_within_ms, flex_wait_ms, attempts, usage_json, standard_cost_pico, "
    "actual_cost_pico, saving_pico, fee_pico, status, http_status, received_at, completed_at, "
    "attempt_log_json"
)


def _time(value: str | dt.datetime) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _pico(amount: Any) -> int | None:
    return None if amount is None else to_pico(amount)


def to_row(r: LedgerRecord) -> tuple[Any, ...]:
    return (
        r.request_id,
        r.org_id,
        r.key_id,
        r.provider,
        r.endpoint,
        r.model,
        r.route,
        r.reason,
        r.tier_requested,
        r.tier_served,
        r.start_within_ms,
        r.flex_wait_ms,
        r.attempts,
        None if r.usage is None else json.dumps(r.usage.as_dict()),
        _pico(r.standard_cost),
        _pico(r.actual_cost),
        to_pico(r.saving),
        to_pico(r.fee),
        r.status,
        r.http_status,
        r.received_at.astimezone(dt.UTC).isoformat(),
        r.completed_at.astimezone(dt.UTC).isoformat(),
        json.dumps(list(r.attempt_log)),
    )


def from_row(row: tuple[Any, ...]) -> LedgerRecord:
    (request_id, org_id, key_id, provider, endpoint, model, route, reason, tier_requested,
     tier_served, start_within_ms, flex_wait_ms, attempts, usage_json, standard, actual, saving,
     fee, status, http_status, received_at, completed_at, attempt_log_json) = row  # fmt: skip
    return LedgerRecord(
        request_id=request_id,
        org_id=org_id,
        key_id=key_id,
        provider=provider,
        endpoint=endpoint,
        model=model,
        route=route,
        reason=reason,
        tier_requested=tier_requested,
        tier_served=tier_served,
        start_within_ms=start_within_ms,
        flex_wait_ms=flex_wait_ms,
        attempts=attempts,
        usage=None if usage_json is None else Usage(**_json(usage_json)),
        standard_cost=None if standard is None else from_pico(standard),
        actual_cost=None if actual is None else from_pico(actual),
        saving=from_pico(saving),
        fee=from_pico(fee),
        status=status,
        http_status=http_status,
        received_at=_time(received_at),
        completed_at=_time(completed_at),
        attempt_log=tuple(_json(attempt_log_json)),
    )
