"""Assembling a non-streaming client's answer from a flex stream takes time linear in its size."""

from __future__ import annotations

import json

import pytest

from benchmarks.assembly import FORMATS, MIB, Format, assemble_seconds, ratios, stream_of
from flexroute.dialects.sse import SSEDecoder


class TestAssemblyIsLinear:
    @pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
    def test_four_times_the_answer_takes_about_four_times_as_long(self, fmt: Format) -> None:
        """2 MiB → 8 MiB costs well under the 16× of quadratic joining (13× before the fix)."""
        (_, _, _), (_, seconds, ratio) = ratios(fmt, [2, 8], repeats=2)
        assert ratio < 9, f"{fmt.name}: 8 MiB took {ratio:.1f}× as long as 2 MiB ({seconds:.2f} s)"

    @pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
    def test_the_assembled_body_holds_the_whole_text(self, fmt: Format) -> None:
        """Text joined from pieces is written once, whole, as a JSON string."""
        data = stream_of(fmt, 1)
        assemble_seconds(fmt, data, 1)
        observer = fmt.dialect().observer(wants_usage=False, assemble=True, headers={})
        decoder = SSEDecoder()
        for at in range(0, len(data), 1000):
            for event in decoder.feed(data[at : at + 1000]):
                observer.observe(event)
        text = json.dumps(json.loads(observer.assemble()))
        assert text.count("x" * 1023 + " ") == MIB // 1024
