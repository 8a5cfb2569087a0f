"""CSV files written for people: no cell a spreadsheet would run as a formula.

Excel, LibreOffice and Google Sheets evaluate a cell that starts with ``=``,
``+``, ``-`` or ``@`` (and, after a tab or carriage return, whatever
follows), so a capture id or a reason copied from a hostile input file
(``=HYPERLINK("http://x","y")``) becomes a live link or a data-exfiltrating
formula on the officer's machine. OWASP's rule: prefix such a cell with a
single quote, which spreadsheets show as text and do not evaluate. Every CSV
the project writes goes through :func:`csv_writer_safe`; numbers are written
as they are (a negative number stays a number).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def csv_cell_neutralise(value: object) -> object:
    """A cell as a spreadsheet will show it: text starting like a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class SafeCsvWriter:
    """``csv.writer`` with every text cell neutralised; the same ``writerow`` and ``writerows``."""

    def __init__(self, handle: _Writable, **options: Any) -> None:
        self._writer = csv.writer(handle, **options)

    def writerow(self, row: Iterable[object]) -> Any:
        return self._writer.writerow([csv_cell_neutralise(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer_safe(handle: _Writable, **options: Any) -> SafeCsvWriter:
    """The one way the project writes CSV for people (reports, rejected rows)."""
    return SafeCsvWriter(handle, **options)
