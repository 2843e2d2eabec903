"""Traces, when the operator asks for them with OpenTelemetry's own ``OTEL_*`` variables.

Off unless configured: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``) or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and
``OTEL_SDK_DISABLED`` is not ``true``. Off, the engine holds ``None`` and pays one ``is None``
test per request and per attempt. On, it needs the extra ``flexroute[otel]``; when the extra is
missing, :func:`tracing_from_env` says so in one warning line and flexroute serves untraced.

The engine speaks only to the two protocols here; :mod:`flexroute.otel` implements them with
the OpenTelemetry SDK (and is the only module that imports it):

* ``Tracer.begin(ctx)`` opens the request's span (continuing an incoming W3C ``traceparent``);
* ``RequestTrace.attempt(headers, url, tier)`` opens a child span for one upstream attempt and
  puts its ``traceparent`` in the attempt's headers, replacing the client's;
* ``RequestTrace.end(record)`` closes them all from the ledger record and its attempt log (the
  same facts the log line and the metrics use); ``close(status)`` closes a request that ends
  without a record (refused, unreachable provider).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flexroute.call import Call, Reply
    from flexroute.context import RequestContext
    from flexroute.dialects.base import Dialect
    from flexroute.ledger.base import LedgerRecord

__all__ = ["RequestTrace", "Tracer", "traced", "tracing_from_env", "tracing_requested"]

SPAN_KINDS = ("server", "internal")
_warned = False


class RequestTrace(Protocol):
    def attempt(self, headers: list[tuple[str, str]], url: str, tier: str) -> None:
        """A child span for an upstream attempt; its ``traceparent`` goes into ``headers``."""

    def end(self, record: LedgerRecord) -> None:
        """Close the request's span and its attempts' from the ledger record."""

    def close(self, http_status: int | None, error: BaseException | None = None) -> None:
        """Close a request that ended without a record (no-op once ended)."""


class Tracer(Protocol):
    description: str  # for the start-up line: what is exported where

    def begin(self, ctx: RequestContext) -> RequestTrace: ...

    def refused(self, call: Call, dialect: Dialect, status: int) -> None:
        """One span for a request refused before routing (a 400 naming the field)."""

    async def aclose(self) -> None:
        """Export what is pending (bounded) and stop."""


async def traced(trace: RequestTrace, answer: Awaitable[Reply]) -> Reply:
    """``answer`` awaited inside ``trace``: a reply without a record (a refusal, an unreachable
    provider) or an error closes the span; a stream's span ends with its record, in the relay,
    a whole answer's with its record, once delivered."""
    try:
        reply = await answer
    except BaseException as error:
        trace.close(None, error)
        raise
    if reply.stream is None and reply.deliver is None:
        trace.close(reply.status)
    return reply


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def tracing_requested(environ: Mapping[str, str] | None = None) -> list[str]:
    """The trace exporters the ``OTEL_*`` variables ask for; ``[]`` when tracing is off."""
    env = os.environ if environ is None else environ
    if _true(env.get("OTEL_SDK_DISABLED")):
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    exporters = [n for n in names if n]
    if not exporters:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        exporters = ["otlp"] if endpoint else []
    return [n for n in exporters if n != "none"]


def tracing_from_env(
    environ: Mapping[str, str] | None = None, *, kind: str = "server"
) -> Tracer | None:
    """The tracer the ``OTEL_*`` variables configure, or None (off, or the extra missing:
    then one warning line per process). A bad exporter name raises ConfigError."""
    global _warned
    env = os.environ if environ is None else environ
    exporters = tracing_requested(env)
    if not exporters:
        return None
    try:
        from flexroute import otel
    except ImportError as error:
        if not _warned:
            _warned = True
            logging.getLogger("flexroute").warning(
                "traces off: OTEL_* variables ask for traces (%s) but OpenTelemetry is not "
                "installed (no module %s); install it with: pip install 'flexroute[otel]'",
                ",".join(exporters),
                error.name,
            )
        return None
    return otel.tracer_from_env(env, exporters, kind=kind)
