"""DataFrames to GitHub-flavoured Markdown tables (no tabulate dependency) and number formatting."""

from __future__ import annotations

import math
import re

import pandas as pd

_FIGURE = re.compile(r"^([-+]?[\d.,]+|—)")


def fmt(value: object, decimals: int = 1, suffix: str = "") -> str:
    """A number for a table cell; an em dash for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int | float):
        return f"{value:,.{decimals}f}{suffix}"
    return str(value)


def signed(value: object, decimals: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+,.{decimals}f}{suffix}"


def _escape(cell: object) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def _figures(column: pd.Series) -> bool:
    cells = [str(c) for c in column if str(c) != ""]
    return bool(cells) and all(_FIGURE.match(c) for c in cells)


def table(frame: pd.DataFrame, index_title: str | None = None) -> str:
    """A Markdown table of already formatted cells; the index becomes the first column when titled."""
    frame = frame.reset_index(names=index_title) if index_title else frame
    header = [_escape(c) for c in frame.columns]
    # Names and words left, figures right; the first column always holds names.
    align = [":---"] + ["---:" if _figures(frame[c]) else ":---" for c in frame.columns[1:]]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
