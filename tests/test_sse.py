"""The SSE decoder keeps each event's bytes and survives any chunking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flexroute.dialects.sse import (
    SSEDecoder,
    _parse_lines,
    encode_comment,
    encode_event,
    parse_event,
)

STREAM = (
    b'data: {"a":1}\n\n'
    b'event: response.created\ndata: {"b":2}\n\n'
    b": a comment\n\n"
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)


class TestSSEDecoder:
    def test_splits_events_and_keeps_raw_bytes(self) -> None:
        """Each event carries its own bytes, its event name and its joined data lines."""
        events = list(SSEDecoder().feed(STREAM))
        assert b"".join(e.raw for e in events) == STREAM
        assert [e.event for e in events] == [None, "response.created", None, None, None]
        assert [e.data for e in events] == [
            '{"a":1}',
            '{"b":2}',
            "",
            "line one\nline two",
            "[DONE]",
        ]

    @given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
    def test_any_chunking_gives_the_same_events(self, cuts: list[int]) -> None:
        """Events do not depend on where the network split the bytes."""
        points = sorted(set(cuts))
        pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
        decoder = SSEDecoder()
        events = [e for piece in pieces for e in decoder.feed(piece)]
        assert b"".join(e.raw for e in events) == STREAM
        assert decoder.pending == b""

    def test_crlf_line_endings_are_normalised(self) -> None:
        """A provider sending CRLF still yields whole events."""
        events = list(SSEDecoder().feed(b"data: x\r\n\r\ndata: y\r\n\r\n"))
        assert [e.data for e in events] == ["x", "y"]

    def test_unterminated_event_stays_pending(self) -> None:
        """A broken stream's half event is kept aside, not emitted."""
        decoder = SSEDecoder()
        assert list(decoder.feed(b'data: {"a":1}\n\ndata: {"tru')) != []
        assert decoder.pending == b'data: {"tru'

    def test_encoders_round_trip(self) -> None:
        """Events and comments flexroute writes decode as expected."""
        events = list(SSEDecoder().feed(encode_event('{"x":1}', "error") + encode_comment("hi")))
        assert events[0].event == "error"
        assert events[0].data == '{"x":1}'
        assert events[1].data == ""

    @given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
    def test_crlf_streams_split_anywhere_give_the_same_events(self, cuts: list[int]) -> None:
        """A "\\r\\n" split between two reads is one line ending, not two."""
        crlf = STREAM.replace(b"\n", b"\r\n")
        points = sorted({min(c * 2, len(crlf)) for c in cuts})
        pieces = [crlf[a:b] for a, b in zip([0, *points], [*points, len(crlf)], strict=True)]
        decoder = SSEDecoder()
        events = [e for piece in pieces for e in decoder.feed(piece)]
        assert b"".join(e.raw for e in events) == STREAM
        assert decoder.pending == b""


class TestOneDataLine:
    @given(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b))
    def test_the_quick_reading_gives_what_the_general_one_gives(self, data: bytes) -> None:
        """``data: X`` events (any bytes, invalid UTF-8 too) read the same either way."""
        raw = b"data: " + data + b"\n\n"
        assert parse_event(raw) == _parse_lines(raw)
