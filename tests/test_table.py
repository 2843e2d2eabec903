"""The plain-text table renderer behind ``flexroute prices`` and the demo."""

from __future__ import annotations

import pytest

from flexroute.table import render_table


class TestRenderTable:
    def test_pads_columns_to_the_widest_cell_under_an_underlined_header(self) -> None:
        """Every column is as wide as its widest cell, the header underlined with dashes."""
        text = render_table(["model", "input"], [["gpt-5", "1.25"], ["o3", "2.00"]])
        assert text.splitlines() == [
            "model  input",
            "-----  -----",
            "gpt-5  1.25",
            "o3     2.00",
        ]

    def test_aligns_columns_right_when_asked(self) -> None:
        """An ``r`` in ``align`` right-aligns that column, numbers lining up on the right."""
        text = render_table(["model", "output"], [["gpt-5", "10.00"], ["o3", "8.00"]], align="lr")
        assert text.splitlines() == [
            "model  output",
            "-----  ------",
            "gpt-5   10.00",
            "o3       8.00",
        ]

    def test_trims_trailing_spaces_and_ends_without_a_newline(self) -> None:
        """Lines carry no trailing padding and the text has no final newline."""
        text = render_table(["a", "b"], [["long-cell", ""]])
        assert all(line == line.rstrip() for line in text.splitlines())
        assert not text.endswith("\n")

    def test_renders_a_header_alone_when_there_are_no_rows(self) -> None:
        """An empty table is its header and underline."""
        assert render_table(["provider"], []) == "provider\n--------"

    def test_rejects_a_row_of_the_wrong_length(self) -> None:
        """A row with a missing or extra cell is a ValueError naming the row."""
        with pytest.raises(ValueError, match="row 2 has 1 cells, expected 2"):
            render_table(["a", "b"], [["1", "2"], ["3"]])

    @pytest.mark.parametrize("align", ["l", "lrl", "lx"])
    def test_rejects_an_align_that_does_not_fit_the_columns(self, align: str) -> None:
        """``align`` must hold exactly one ``l`` or ``r`` per column."""
        with pytest.raises(ValueError, match="align must hold one"):
            render_table(["a", "b"], [["1", "2"]], align=align)

    def test_rejects_a_table_without_columns(self) -> None:
        """A table needs at least one header."""
        with pytest.raises(ValueError, match="at least one header"):
            render_table([], [])
