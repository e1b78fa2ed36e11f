"""What a verb's library function hands the command line: a result that prints itself.
No torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Printed:
    """`data` is what --json prints, `lines` what is printed otherwise; `notes` go to
    stderr either way (one line each), and `code` is the exit status."""

    data: object
    lines: list[str]
    notes: list[str] = field(default_factory=list)
    code: int = 0
