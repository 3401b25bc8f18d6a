"""What every command shares: the rich console it prints through and how it reads comma-separated options.

Piped output (CI logs, `> file`) gets a wide fixed width: rich's 80-column default squeezed the
count columns of `data stats` to nothing when its no-wrap name columns took the space.
"""

from __future__ import annotations

import sys

from rich.console import Console

PIPED_WIDTH = 200


def make_console(*, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPED_WIDTH)


def comma_list(value: str) -> list[str]:
    """`--tasks a, b,c` -> ["a", "b", "c"]; empty items are dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]
