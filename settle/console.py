"""Terminal output shared by every command: one-line errors and tables that survive pipes."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def one_line(text: str) -> str:
    """``text`` with control characters (a line break, an escape sequence in a file name)
    shown as ``\\n``, ``\\x1b``…, so an error stays one line and cannot recolour or
    rewrite the user's terminal."""
    return text.translate(_CONTROL)


_CONTROL = {c: repr(chr(c))[1:-1] for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)}


def fail(message: str, code: int = 1) -> NoReturn:
    """``settle: error: …`` on stderr, one line, and exit (2: usage or config; 1: the rest)."""
    err.print(f"settle: error: {one_line(message)}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def cell(text: str) -> Text:
    """A table cell from outside text (a strap's advertised name is anyone's to choose):
    shown literally — no Rich markup (``[/x]`` crashed the table, ``[link=…]`` made a
    hyperlink), no control characters (an escape sequence cleared the screen)."""
    return Text(one_line(text))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; plain aligned columns when piped (nothing cut or wrapped).
    Cells are shown literally (:func:`cell`)."""
    if out.is_terminal:
        table = Table(*headers)
        for r in rows:
            table.add_row(*(cell(c) for c in r))
        out.print(table)
        return
    rows = [[one_line(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        out.print(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), markup=False
        )
