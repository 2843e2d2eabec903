"""Non-streaming assembly: is building a client's JSON answer from a flex stream linear?

A non-streaming client's flex attempt is streamed from the provider and assembled into the
provider's normal JSON body (:meth:`Observer.assemble <flexroute.dialects.base.Observer>`).
This feeds the emulator's own streams for each routed wire format, in 64 KiB reads, through
the same decoder and observer the engine uses, and reports the time per size as a ratio
against the smallest size of the same run. Linear assembly gives a ratio close to the size
ratio (4 MiB → 16 MiB: about 4); quadratic assembly gives its square (about 16).

``python -m benchmarks.assembly [--sizes 4 16]`` prints the table; ``tests/test_assembly.py``
runs the same measurement with a generous bound.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

from flexroute.dialects.base import Dialect
from flexroute.dialects.gemini import GeminiDialect
from flexroute.dialects.gemini_interactions import InteractionsDialect
from flexroute.dialects.openai_chat import ChatDialect
from flexroute.dialects.openai_responses import ResponsesDialect
from flexroute.dialects.sse import SSEDecoder
from flexroute.emulator.capacity import Tier
from flexroute.emulator.content import Reply
from flexroute.emulator.gemini import GeminiWire
from flexroute.emulator.gemini_interactions import InteractionsWire
from flexroute.emulator.openai_chat import ChatWire
from flexroute.emulator.openai_responses import ResponsesWire
from flexroute.emulator.wire import Meta, Wire

READ = 64 * 1024  # bytes per read from the provider's stream
PIECE = 1024  # characters per streamed delta
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    wire: Callable[[], Wire]
    dialect: Callable[[], Dialect]


FORMATS = (
    Format("openai chat", ChatWire, ChatDialect),
    Format("openai responses", ResponsesWire, ResponsesDialect),
    Format("gemini", GeminiWire, GeminiDialect),
    Format("gemini interactions", InteractionsWire, InteractionsDialect),
)


def stream_of(fmt: Format, mib: int) -> bytes:
    """The emulator's SSE stream of a text answer of about ``mib`` MiB."""
    piece = "x" * (PIECE - 1) + " "
    reply = Reply("text", (piece,) * (mib * MIB // PIECE), 10, 0, 0)
    meta = Meta(seq=1, model="gpt-5-mini", created=1_700_000_000, tier=Tier.FLEX)
    script = fmt.wire().script(reply, meta)
    return b"".join((*script.preamble, *script.steps, *script.closing))


def assemble_seconds(fmt: Format, data: bytes, mib: int) -> float:
    """Decode, observe and assemble ``data`` as the engine does; the seconds it took."""
    began = time.perf_counter()
    observer = fmt.dialect().observer(wants_usage=False, assemble=True, headers={})
    decoder = SSEDecoder()
    for at in range(0, len(data), READ):
        for event in decoder.feed(data[at : at + READ]):
            observer.observe(event)
    body = observer.assemble()
    elapsed = time.perf_counter() - began
    if not observer.finished or len(body) < mib * MIB:
        raise AssertionError(f"{fmt.name}: the stream did not assemble ({len(body)} bytes)")
    return elapsed


def ratios(fmt: Format, sizes: list[int], repeats: int = 2) -> list[tuple[int, float, float]]:
    """(MiB, best seconds, ratio to the smallest size) for each size."""
    rows = []
    for mib in sizes:
        data = stream_of(fmt, mib)
        rows.append((mib, min(assemble_seconds(fmt, data, mib) for _ in range(repeats))))
    base = rows[0][1]
    return [(mib, seconds, seconds / base) for mib, seconds in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    args = parser.parse_args()
    print(f"{'format':<22}{'MiB':>5}{'seconds':>10}{'ratio':>8}  (size ratio in brackets)")
    for fmt in FORMATS:
        for mib, seconds, ratio in ratios(fmt, args.sizes):
            size_ratio = mib / args.sizes[0]
            print(f"{fmt.name:<22}{mib:>5}{seconds:>10.3f}{ratio:>8.2f}  ({size_ratio:g})")


if __name__ == "__main__":
    main()
