"""Logs an operator can ship: one structured line per request, and uvicorn's own lines in the
same format.

``configure(fmt, level)`` installs one handler on the root logger — JSON lines (default) or
plain text for a terminal — and routes uvicorn's loggers through it. ``request_line(record)``
is called for every ledger record (the composition root wires it): logger
``flexroute.requests``, level INFO, with the request's id, organisation, provider, model,
route, reason, tiers, status, flex wait, duration, cost, saving and fee. A line never holds a
key, a prompt or an answer: only fields of the ledger record, which holds none.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from flexroute.ledger.base import LedgerRecord
from flexroute.money import format_usd

__all__ = ["FORMATS", "JSONFormatter", "configure", "request_line"]

FORMATS = ("json", "text")
REQUESTS = logging.getLogger("flexroute.requests")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value …`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and v is not None
        )
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return f"{line} {fields}" if fields else line


def configure(fmt: str = "json", level: str = "info") -> None:
    """One handler on stderr for flexroute's and uvicorn's logs, in ``fmt`` at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True


def request_line(record: LedgerRecord) -> None:
    """The request's log line (logger ``flexroute.requests``, INFO)."""
    if not REQUESTS.isEnabledFor(logging.INFO):
        return
    duration = (record.completed_at - record.received_at).total_seconds() * 1000
    REQUESTS.info(
        "request",
        extra={
            "request_id": record.request_id,
            "org": record.org_id,
            "key_id": record.key_id,
            "provider": record.provider,
            "endpoint": record.endpoint,
            "model": record.model,
            "route": record.route,
            "reason": record.reason,
            "tier_requested": record.tier_requested,
            "tier_served": record.tier_served,
            "status": str(record.status),
            "http_status": record.http_status,
            "start_within_ms": record.start_within_ms,
            "flex_wait_ms": record.flex_wait_ms,
            "duration_ms": round(duration, 1),
            "attempts": record.attempts,
            "cost_usd": _usd(record.actual_cost),
            "standard_cost_usd": _usd(record.standard_cost),
            "saving_usd": format_usd(record.saving),
            "fee_usd": format_usd(record.fee),
        },
    )


def _usd(amount: Any) -> str | None:
    return None if amount is None else format_usd(amount)
