"""JSON at the hot path: orjson where it gives the standard library's answer, the standard
library where it would not.

Every request body, every provider answer and every event of a committed flex stream is read
or written here, so this is where a proxied request's JSON costs CPU (``benchmarks/``). orjson
is several times faster, but it differs from :mod:`json` on input flexroute must keep exact:

* an integer beyond 64 bits is read by orjson as a float (precision lost) and refused when
  written: text with a run of 19 or more digits is read by :mod:`json`, and a big integer
  written by it;
* ``NaN``, ``Infinity``, a number too large for a float (``1e400``), a lone surrogate
  (``"\\ud800"``), a byte-order mark or UTF-16 text are refused by orjson: :mod:`json`
  reads them. A non-finite number it reads becomes a :class:`NonFinite` float, which orjson
  will not write (it would write ``null``), so it is written back by :mod:`json` as it came;
* a lone surrogate written: escaped (``"\\ud800"``), as the client wrote it.

A plain ``float("nan")`` that flexroute computed itself would be written as ``null``: no code
here computes one, and every non-finite number read is a :class:`NonFinite`.

Anything orjson refuses goes to :mod:`json`, so errors (and their messages) are the standard
library's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["NonFinite", "dumps", "loads"]

# 19 digits reach beyond int64 (-9223372036854775809); orjson would read that as a float.
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")


# Types orjson writes that json refuses: refused here too (``default`` decides).
_AS_JSON_DOES = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


class NonFinite(float):
    """``NaN``, ``Infinity`` or an overflowing number read from JSON: a float that orjson
    refuses to write, so it goes back out as :mod:`json` writes it (``NaN``, ``Infinity``)."""

    __slots__ = ()


def _constant(text: str) -> float:
    return NonFinite(text)


def _float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(value)


def loads(data: bytes | str) -> Any:
    """:func:`json.loads`, faster; raises what it raises (``ValueError``, ``RecursionError``)."""
    long = (
        _LONG_DIGITS_TEXT.search(data) if isinstance(data, str) else _LONG_DIGITS_BYTES.search(data)
    )
    if long is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data, parse_constant=_constant, parse_float=_float)


def dumps(obj: object, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON, as ``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``
    writes it (a lone surrogate escaped); ``default`` as for :func:`json.dumps`."""
    try:
        return orjson.dumps(obj, default=default, option=_AS_JSON_DOES)
    except orjson.JSONEncodeError:
        pass
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=default)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): escaped, as the client wrote it
        return json.dumps(obj, separators=(",", ":"), default=default).encode()
