"""Parse ``start_within``: ``"750ms"``, ``"30s"``, ``"2m"``, ``"1m30s"`` or a number of seconds."""

from __future__ import annotations

import math
import re

from flexroute.errors import RequestRejected

MAX_SECONDS = 15 * 60
ACCEPTED_FORMS = (
    'a duration string such as "750ms", "30s", "2m" or "1m30s", or a JSON number of seconds, '
    "greater than 0 and at most 15 minutes"
)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m))+")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def parse_start_within(value: object, *, field: str = "start_within") -> float:
    """Seconds in ``value``; raises :class:`RequestRejected` (400) quoting the bad value."""
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # a 400-digit integer: far beyond 15 minutes
            seconds = None
    elif isinstance(value, str):
        text = value.strip()
        if _WHOLE.fullmatch(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
        else:
            try:
                seconds = float(text)
            except ValueError:
                seconds = None
    if seconds is None or not math.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise RequestRejected(
            400,
            f"Invalid {field} {_quote(value)}: expected {ACCEPTED_FORMS}.",
            code="invalid_start_within",
            param=field,
        )
    return seconds


def _quote(value: object) -> str:
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def format_seconds(seconds: float) -> str:
    """The inverse for display: ``1.5`` → ``"1500ms"``, ``30`` → ``"30s"``."""
    if seconds < 1 or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    return f"{int(seconds)}s"
