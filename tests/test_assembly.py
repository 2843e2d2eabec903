"""Assembling a non-streaming client's answer from a flex stream: the body is whole (the time
against size is benchmarks/assembly.py's figure)."""

from __future__ import annotations

import json

import pytest

from benchmarks.assembly import FORMATS, MIB, Format, assemble_seconds, ratios, stream_of
from flexroute.dialects.sse import SSEDecoder


class TestAssembly:
    def test_the_benchmark_reports_a_ratio_per_format_and_size(self) -> None:
        """``benchmarks/assembly.py`` times each format at each size against the smallest
        (how linear it is is the benchmark's figure, not a timed assertion)."""
        for fmt in FORMATS:
            rows = ratios(fmt, [1, 2], repeats=1)
            assert [mib for mib, _, _ in rows] == [1, 2]
            assert rows[0][2] == 1.0
            assert all(seconds > 0 for _, seconds, _ in rows)

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
