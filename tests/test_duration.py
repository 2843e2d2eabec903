"""start_within parsing (SPEC §2)."""

from __future__ import annotations

import pytest

from flexroute.duration import parse_start_within
from flexroute.errors import RequestRejected


class TestParseStartWithin:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("750ms", 0.75),
            ("30s", 30.0),
            ("2m", 120.0),
            ("1m30s", 90.0),
            ("1.5s", 1.5),
            (30, 30.0),
            (0.25, 0.25),
            ("45", 45.0),
            ("15m", 900.0),
        ],
    )
    def test_accepts_the_documented_forms(self, value: object, seconds: float) -> None:
        """Duration strings and JSON numbers of seconds parse to seconds."""
        assert parse_start_within(value) == pytest.approx(seconds)

    @pytest.mark.parametrize(
        "value", ["0s", 0, -1, "16m", 901, "soon", "", "30 s", "1h", True, None, [30], "nan"]
    )
    def test_rejects_bad_values_with_a_400_quoting_them(self, value: object) -> None:
        """A bad value is a 400 whose message quotes it and lists the accepted forms."""
        with pytest.raises(RequestRejected) as caught:
            parse_start_within(value)
        error = caught.value
        assert error.status == 400
        assert error.param == "start_within"
        assert "750ms" in error.message
        assert "15 minutes" in error.message
        if isinstance(value, str) and value:
            assert f'"{value}"' in error.message

    def test_names_the_header_when_the_header_is_bad(self) -> None:
        """The error names the field the bad value came from."""
        with pytest.raises(RequestRejected, match="x-flex-start-within"):
            parse_start_within("later", field="x-flex-start-within")
