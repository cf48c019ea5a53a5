"""The ``settle`` console script.

Ctrl-C while the command line is still being loaded (typer, rich and pydantic take a few
tenths of a second) printed a 20–36 line traceback ending in ``KeyboardInterrupt``; later it
exits 130 without a word. This module imports nothing heavy, so it can say the same from the
first instant."""

from __future__ import annotations

import sys


def main() -> None:
    """Load the command line and run it; an interrupt while loading exits 130."""
    try:
        from settle.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)
    try:
        cli_main()
    except KeyboardInterrupt:  # before the command's own handling is in place
        sys.exit(130)
