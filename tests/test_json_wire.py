"""The hot path's JSON (orjson underneath) reads and writes exactly what :mod:`json` does."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexroute import fastjson
from flexroute.dialects.base import Pieces, dumps, loads_object, request_object
from flexroute.errors import RequestRejected


def stdlib(obj: Any) -> bytes:
    """What flexroute wrote before orjson: compact, UTF-8, a lone surrogate escaped."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, NaN included, and with the same Python types (no int→float)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b) and not (isinstance(a, float) and isinstance(b, float)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


class TestReadsAsJsonDoes:
    @pytest.mark.parametrize(
        "raw",
        [
            b'{"n":123456789012345678901234567890}',  # orjson alone: a float
            b'{"n":-9223372036854775809}',  # just below int64
            b'{"n":18446744073709551616}',  # just above uint64
            b'{"a":NaN,"b":Infinity,"c":-Infinity,"d":1e400}',
            b'{"s":"\\ud800"}',  # an escaped lone surrogate
            b'\xef\xbb\xbf{"a":1}',  # a UTF-8 byte-order mark
            '{"a":"é"}'.encode("utf-16"),
            b'{"a":1,"a":2}',
            b' {"x":[1,2.5,"\\u00e9",null,true]} ',
        ],
    )
    def test_hostile_numbers_and_text_read_as_json_reads_them(self, raw: bytes) -> None:
        """Big integers stay integers, NaN and Infinity are read, surrogates and BOMs too."""
        assert same(fastjson.loads(raw), json.loads(raw))

    @pytest.mark.parametrize(
        "raw", [b'{"a":', b"[" * 5000 + b"]" * 5000, b"\xff", "\ufeff{}", b'{"a":01}', b""]
    )
    def test_what_json_refuses_is_refused_with_its_error(self, raw: bytes | str) -> None:
        """The same exception type and message as :func:`json.loads`."""
        with pytest.raises((ValueError, RecursionError)) as ours:
            fastjson.loads(raw)
        with pytest.raises((ValueError, RecursionError)) as theirs:
            json.loads(raw)
        assert type(ours.value) is type(theirs.value)
        assert str(ours.value) == str(theirs.value)

    @given(JSON_VALUES)
    def test_any_value_json_writes_reads_back_the_same(self, value: Any) -> None:
        """Whatever json writes (NaN and 30-digit integers included) reads back equal."""
        raw = stdlib(value)
        assert same(fastjson.loads(raw), json.loads(raw))
        assert same(fastjson.loads(raw.decode("utf-8", "surrogatepass")), json.loads(raw))


class TestWritesAsJsonDoes:
    @given(JSON_VALUES)
    def test_any_value_read_is_written_as_the_same_json(self, value: Any) -> None:
        """What was read from JSON (non-finite numbers included) is written back as json
        writes it: the bytes read back to the same value."""
        read = fastjson.loads(stdlib(value))
        assert same(json.loads(fastjson.dumps(read)), json.loads(stdlib(value)))

    def test_non_finite_numbers_go_back_out_as_they_came(self) -> None:
        """NaN and Infinity in a client's body are forwarded as NaN and Infinity, not null."""
        body = request_object(b'{"model":"m","temperature":NaN,"top_p":Infinity,"x":1e999}')
        assert dumps(body) == b'{"model":"m","temperature":NaN,"top_p":Infinity,"x":Infinity}'

    def test_big_integers_and_lone_surrogates_are_written_exactly(self) -> None:
        """A 30-digit integer keeps every digit; a lone surrogate is escaped as it was sent."""
        body = request_object(b'{"seed":123456789012345678901234567890,"user":"\\ud800"}')
        assert dumps(body) == b'{"seed":123456789012345678901234567890,"user":"\\ud800"}'

    def test_pieces_are_written_as_strings(self) -> None:
        """Assembled text (:class:`Pieces`) is joined into one JSON string."""
        text = Pieces("hel")
        text.add("lo")
        assert dumps({"content": text, "n": 1}) == b'{"content":"hello","n":1}'

    def test_unknown_types_are_refused_as_json_refuses_them(self) -> None:
        """A value json cannot write raises TypeError, never a silent null."""
        with pytest.raises(TypeError):
            dumps({"when": object()})


class TestBodiesAtTheEdges:
    def test_a_body_that_is_not_an_object_is_a_400(self) -> None:
        """A JSON array is refused with the field-naming 400 it always got."""
        with pytest.raises(RequestRejected) as caught:
            request_object(b"[1,2]")
        assert caught.value.status == 400
        assert "JSON list, not an object" in caught.value.message

    def test_events_that_are_not_objects_read_as_none(self) -> None:
        """loads_object answers None for anything but one JSON object."""
        assert loads_object('{"a":1}') == {"a": 1}
        assert loads_object("[DONE]") is None
        assert loads_object(b"[1]") is None
