"""Every CSV the product hands to a person goes through here: formula injection neutralised (the
OWASP CSV-injection guidance listed in docs/reliability.md), blocks streamed.

A spreadsheet opening a CSV runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula
(``=HYPERLINK(...)`` in an AE term becomes a link that leaks the sheet), and a leading tab or carriage
return hides the same payload from a quick look. Following OWASP's "CSV Injection" advice, such a
cell gets a single quote in front (spreadsheets show it as text and hide the quote) and every cell is
wrapped in double quotes, so a ``;`` or ``,`` inside a cell cannot start a new cell in any locale.

A plain number (``-7``, ``-0.5``) cannot carry a formula and is left as it is, so study days and
negative changes stay numbers (defusedcsv makes the same exception). defusedcsv itself is not used:
it leaves tab and carriage return alone, and the database-side exports need the same rule as SQL
(``sql_neutralised``), which a drop-in ``csv`` replacement cannot give.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from typing import Any

from django.http import StreamingHttpResponse

# The first characters that make a spreadsheet evaluate or hide a cell (OWASP CSV Injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
# The same tests in SQL (kept next to the Python rule on purpose; a test holds them equal): the first
# character's code, which costs no string copy.
_SQL_PREFIX_CODES = ", ".join(str(ord(c)) for c in FORMULA_PREFIXES)
_SQL_PLAIN_NUMBER = r"^[-+]?[0-9]+(\.[0-9]+)?$"

BLOCK_ROWS = 1000  # rows per streamed chunk: large enough to keep the per-chunk cost negligible


def neutralise(value: Any) -> str:
    """The cell text for ``value``: empty for None, prefixed with ``'`` if it could run as a formula."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def sql_neutralised(expression: str) -> str:
    """A SQL expression giving the cell text of ``expression`` (a text expression), neutralised the
    way ``neutralise`` does it, for exports that PostgreSQL writes itself with ``COPY``."""
    # The cheap first-character test runs on every cell; the regular expression only on the few
    # cells that start with a dangerous character.
    return (
        f"CASE WHEN ascii({expression}) IN ({_SQL_PREFIX_CODES}) "
        f"THEN CASE WHEN {expression} ~ '{_SQL_PLAIN_NUMBER}' THEN {expression} "
        f"ELSE '''' || {expression} END ELSE {expression} END"
    )


class SafeWriter:
    """``csv.writer`` with every cell neutralised and quoted (the only CSV writer the product uses)."""

    def __init__(self, file) -> None:
        self._writer = csv.writer(file, quoting=csv.QUOTE_ALL, lineterminator="\r\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([neutralise(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        self._writer.writerows([neutralise(cell) for cell in row] for row in rows)


def csv_text(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A whole (small) CSV document as text."""
    buffer = io.StringIO()
    writer = SafeWriter(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def csv_blocks(
    header: Iterable[str], rows: Iterable[Iterable[Any]], *, block_rows: int = BLOCK_ROWS
) -> Iterator[bytes]:
    """The CSV of ``rows`` in blocks of ``block_rows`` lines, UTF-8: memory stays at one block
    however many rows the iterable yields."""
    buffer = io.StringIO()
    writer = SafeWriter(buffer)
    writer.writerow(header)
    batch: list[Iterable[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= block_rows:
            writer.writerows(batch)
            batch.clear()
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows(batch)
    yield buffer.getvalue().encode()


def csv_response(blocks: Iterable[bytes], *, filename: str) -> StreamingHttpResponse:
    """A download of streamed CSV blocks (never cached: an export reflects the data of its moment)."""
    response = StreamingHttpResponse(blocks, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
