"""Small helpers the commands share: number parsing, output paths checked before any work,
and rich tables."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path


def parse_float(text: str, what: str) -> float:
    """Parse a number from the command line, with an error that names what it was for."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if math.isnan(value):
        raise ValueError(f"{what} must be a number, got {text!r}")
    return value


def parse_seed(text: str, what: str = "--seed") -> int:
    """A seed from the command line: a whole number in ``[0, 2**63)`` (what torch takes)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise ValueError(f"{what} must be a whole number from 0 to 2**63 - 1, got {text!r}")
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


def check_output_file(path: str, option: str, *, suffix: str | None = None) -> Path:
    """Check, before any work, that ``path`` can be written as a file: right suffix, not a
    folder, and a parent folder that exists or can be created and is writable."""
    if not path.strip():
        raise ValueError(f"{option} is empty: give a file name")
    p = Path(path)
    if suffix is not None and p.suffix.lower() != suffix:
        raise ValueError(f"{option} must name a {suffix} file, got {path!r}: the name must "
                         f"end in {suffix}")
    if p.is_dir():
        raise ValueError(f"{option} {path!r} is a folder: give a file name inside it, e.g. "
                         f"{str(p / ('out' + (suffix or '')))!r}")
    _check_folder(p.parent, option, path)
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{option} {path!r} exists and may not be overwritten: choose another "
                         "file name")
    return p


def check_output_dir(path: str, option: str) -> Path:
    """Check, before any work, that ``path`` is a folder, or can be created, and is writable."""
    if not path.strip():
        raise ValueError(f"{option} is empty: give a folder name, e.g. runs/first")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {path!r} is a file, not a folder: give a folder name (it is "
                         "created if missing)")
    _check_folder(p, option, path)
    return p


def _check_folder(folder: Path, option: str, given: str) -> None:
    """The nearest folder of ``folder`` that exists (itself or an ancestor) must be a folder
    this process may write in; the missing rest is created when the file is written."""
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {given!r} cannot be created: {str(existing)!r} is a file, "
                         "not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {given!r} cannot be created: no permission to write in "
                         f"{str(existing)!r}; choose a folder you can write to")
