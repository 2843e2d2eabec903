"""A tiny plain-text table renderer for the terminal (``flexroute prices``, the demo).

::

    provider  model   input
    --------  ------  -----
    openai    gpt-5    1.25

Columns are separated by two spaces, the header is underlined with dashes, trailing spaces are
trimmed. Widths count characters, so wide (East Asian) glyphs may misalign; the tables flexroute
prints are ASCII.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table"]

_GAP = "  "


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> str:
    """Render ``rows`` under ``headers`` as aligned plain text (no trailing newline).

    ``align`` holds one character per column, ``"l"`` (left) or ``"r"`` (right); by default every
    column is left-aligned. Raises :class:`ValueError` when a row or ``align`` does not have one
    entry per header.
    """
    columns = len(headers)
    if columns == 0:
        raise ValueError("render_table needs at least one header")
    if align is None:
        align = "l" * columns
    if len(align) != columns or set(align) - {"l", "r"}:
        raise ValueError(
            f'align must hold one "l" or "r" per column ({columns} columns), got {align!r}'
        )
    cells = [[str(cell) for cell in row] for row in rows]
    for number, row in enumerate(cells, start=1):
        if len(row) != columns:
            raise ValueError(f"row {number} has {len(row)} cells, expected {columns}: {row!r}")
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        _line(headers, widths, align),
        _line(["-" * width for width in widths], widths, align),
        *(_line(row, widths, align) for row in cells),
    ]
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int], align: str) -> str:
    padded = (
        cell.rjust(width) if how == "r" else cell.ljust(width)
        for cell, width, how in zip(cells, widths, align, strict=True)
    )
    return _GAP.join(padded).rstrip()
