"""Logs an operator can ship: one structured line per request, and uvicorn's own lines in the
same format.

``configure(fmt, level)`` installs one handler on the root logger — JSON lines (default) or
plain text for a terminal — and routes uvicorn's loggers through it. ``request_line(record)``
is called for every ledger record (the composition root wires it): logger
``flexroute.requests``, level INFO, with the request's id, organisation, provider, model,
route, reason, tiers, status, flex wait, time to first byte, duration, cost, saving and fee.
A line never holds a key, a prompt or an answer: only fields of the ledger record, which
holds none.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

from flexroute.fastjson import dumps
from flexroute.ledger.base import LedgerRecord
from flexroute.metrics import first_byte_ms
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
        return dumps(out, default=str).decode()


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


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread; when it falls behind (a stuck stderr pipe), drops
    them and counts the drops rather than blocking the event loop or growing without end."""

    dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record with its message merged, as the standard ``prepare`` leaves it, but
        without formatting and copying it on the event loop when there is no traceback to
        render (every request line): the writer thread, in this process, formats it."""
        if record.exc_info or record.exc_text or record.stack_info:
            prepared: logging.LogRecord = super().prepare(record)
            return prepared
        record.message = record.msg = record.getMessage()
        record.args = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            type(self).dropped += 1


_listener: logging.handlers.QueueListener | None = None


def configure(fmt: str = "json", level: str = "info") -> None:
    """One handler for flexroute's and uvicorn's logs, in ``fmt`` at ``level``. Lines are
    written to stderr by a thread of their own (at most 10,000 waiting), so a slow or stuck
    log pipe never stalls a request."""
    global _listener
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    waiting: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=10_000)
    _stop_listener()
    _listener = logging.handlers.QueueListener(waiting, writer)
    _listener.start()
    atexit.register(_stop_listener)
    root = logging.getLogger()
    root.handlers[:] = [_DroppingQueueHandler(waiting)]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        # uvicorn's access lines stay off: the request line says more, once per request. (A
        # worker configures this after uvicorn did: propagating them would turn them on.)
        uvicorn_logger.propagate = name != "uvicorn.access"


def _stop_listener(timeout: float = 2.0) -> None:
    """Flush what the writer thread can in ``timeout`` seconds (never block exit on a stuck
    pipe: the thread is a daemon)."""
    global _listener
    listener, _listener = _listener, None
    if listener is None or listener._thread is None:
        return
    thread = listener._thread
    deadline = time.monotonic() + timeout
    try:
        listener.queue.put(listener._sentinel, timeout=timeout)  # type: ignore[attr-defined]
    except queue.Full:
        return
    thread.join(max(0.0, deadline - time.monotonic()))


def request_line(record: LedgerRecord) -> None:
    """The request's log line (logger ``flexroute.requests``, INFO)."""
    if not REQUESTS.isEnabledFor(logging.INFO):
        return
    duration = (record.completed_at - record.received_at).total_seconds() * 1000
    # A record made and handled here, not info(): info() walks the stack for its caller and
    # makeRecord sets the fields one by one, most of a line's cost on the event loop.
    line = logging.getLogRecordFactory()(
        REQUESTS.name, logging.INFO, __file__, 0, "request", None, None, "request_line"
    )
    line.__dict__.update(
        {
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
            "first_byte_ms": _ms(first_byte_ms(record.attempt_log)),
            "duration_ms": round(duration, 1),
            "attempts": record.attempts,
            "cost_usd": _usd(record.actual_cost),
            "standard_cost_usd": _usd(record.standard_cost),
            "saving_usd": format_usd(record.saving),
            "fee_usd": format_usd(record.fee),
        }
    )
    REQUESTS.handle(line)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _usd(amount: Any) -> str | None:
    return None if amount is None else format_usd(amount)
