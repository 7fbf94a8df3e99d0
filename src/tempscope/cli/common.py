"""Small helpers the commands share: number parsing and rich tables."""

from __future__ import annotations

import math
from collections.abc import Sequence


def parse_float(text: str, what: str) -> float:
    """Parse a number from the command line, with an error that names what it was for."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if math.isnan(value):
        raise ValueError(f"{what} must be a number, got {text!r}")
    return value


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    highlight: int | None = None,
) -> None:
    """Print a rich table; numeric-looking columns are right-aligned."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        numeric = bool(rows) and all(_looks_numeric(r[i]) for r in rows)
        table.add_column(name, justify="right" if numeric else "left")
    for i, row in enumerate(rows):
        table.add_row(*row, style="bold" if i == highlight else None)
    Console(highlight=False, soft_wrap=True).print(table)


def _looks_numeric(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True
