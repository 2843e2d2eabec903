"""Ledger records as database rows, shared by both backends (money as integer pico-USD,
times as UTC ISO strings that PostgreSQL casts to ``timestamptz``, JSON as text)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flexroute import fastjson
from flexroute.ledger.base import LedgerRecord
from flexroute.money import from_pico, to_pico
from flexroute.usage import Usage

COLUMNS = (
    "request_id, org_id, key_id, provider, endpoint, model, route, reason, tier_requested, "
    "tier_served, start_within_ms, flex_wait_ms, attempts, usage_json, standard_cost_pico, "
    "actual_cost_pico, saving_pico, fee_pico, status, http_status, received_at, completed_at, "
    "attempt_log_json, flex_probability"
)


def _time(value: str | dt.datetime) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def _json(value: Any) -> Any:
    return fastjson.loads(value) if isinstance(value, str) else value


# Both backends store 64-bit integers; a value beyond them is hostile input, not money.
_INT_MAX = 2**63 - 1
_TEXT_MAX = 512  # model names, endpoints and reasons come from clients: bounded


def _pico(amount: Any) -> int | None:
    return None if amount is None else to_pico(amount)


def _text(value: str | None) -> str | None:
    """Text any database accepts: a lone surrogate (``"\\ud800"`` in JSON) becomes ``?``, a
    NUL U+FFFD, and client-supplied text is cut at ``_TEXT_MAX`` characters."""
    if value is None:
        return None
    if len(value) <= _TEXT_MAX and value.isascii() and "\0" not in value:
        return value  # the common case, at a tenth of the cost
    clean = value.encode("utf-8", "replace").decode("utf-8").replace("\0", "\ufffd")
    return clean[:_TEXT_MAX]


def _int(value: int | None) -> int | None:
    return None if value is None else max(-_INT_MAX, min(_INT_MAX, value))


def _money(r: LedgerRecord) -> tuple[int | None, int | None, int, int]:
    """Costs, saving and fee in pico-USD; an amount no 64-bit column holds (a forged usage
    count) leaves the request unpriced rather than stopping the writer."""
    amounts = (_pico(r.standard_cost), _pico(r.actual_cost), to_pico(r.saving), to_pico(r.fee))
    if any(a is not None and abs(a) > _INT_MAX for a in amounts):
        return None, None, 0, 0
    standard, actual, saving, fee = amounts
    assert saving is not None
    assert fee is not None
    return standard, actual, saving, fee


def to_row(r: LedgerRecord) -> tuple[Any, ...]:
    """The record as a row both backends can always store (see :func:`_text`, :func:`_money`)."""
    return (
        _text(r.request_id),
        _text(r.org_id),
        _text(r.key_id),
        _text(r.provider),
        _text(r.endpoint),
        _text(r.model),
        _text(r.route),
        _text(r.reason),
        _text(r.tier_requested),
        _text(r.tier_served),
        _int(r.start_within_ms),
        _int(r.flex_wait_ms),
        _int(r.attempts),
        None if r.usage is None else fastjson.dumps(r.usage.as_dict()).decode(),
        *_money(r),
        _text(r.status),
        _int(r.http_status),
        r.received_at.astimezone(dt.UTC).isoformat(),
        r.completed_at.astimezone(dt.UTC).isoformat(),
        fastjson.dumps(list(r.attempt_log)).decode(),
        _probability(r.flex_probability),
    )


def _probability(p: float | None) -> float | None:
    return None if p is None or not 0.0 <= p <= 1.0 else round(p, 6)


def from_row(row: tuple[Any, ...] | list[Any]) -> LedgerRecord:
    """A stored row; a spooled row written before ``flex_probability`` existed has 23."""
    flex_probability = row[23] if len(row) > 23 else None
    (request_id, org_id, key_id, provider, endpoint, model, route, reason, tier_requested,
     tier_served, start_within_ms, flex_wait_ms, attempts, usage_json, standard, actual, saving,
     fee, status, http_status, received_at, completed_at, attempt_log_json) = row[:23]  # fmt: skip
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
        flex_probability=flex_probability,
    )
