"""The CSV files a person opens in a spreadsheet (the tumor report, per-slice and per-image tables).

Written atomically (:func:`~scripts.io.atomic_output`), UTF-8, one home for two hazards:

- A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to a
  spreadsheet: a file named ``=HYPERLINK("http://...").jpg`` would become a link, ``+cmd|...`` a
  command. Such text is written with a leading ``'`` (what spreadsheets show as text, OWASP's advice)
  and :func:`read_csv` takes it off again.
- A file name that is not valid UTF-8 (Latin-1 bytes on a Linux disk) reaches Python as surrogates,
  which UTF-8 cannot write: the whole report was lost. They are written back as the name's own
  bytes (``surrogateescape``), and read the same way.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .io import atomic_output

__all__ = ["FORMULA_STARTS", "from_spreadsheet_text", "read_csv", "spreadsheet_text", "write_csv"]

#: What makes a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: Any) -> Any:
    """``value`` as a spreadsheet shows it: text starting with a formula character gets a leading ``'``."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def from_spreadsheet_text(text: str) -> str:
    """The text :func:`spreadsheet_text` was given."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def write_csv(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, fields: Sequence[str], missing: Any = ""
) -> str:
    """Write ``rows`` (their ``fields`` only, ``None`` and absent values as ``missing``) as CSV, atomically.

    Returns:
        ``path``.
    """
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                values = {k: row.get(k) for k in fields}
                writer.writerow({k: missing if v is None else spreadsheet_text(v) for k, v in values.items()})
    return os.fspath(path)


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file, each cell's text as :func:`write_csv` was given it.

    A byte order mark (a spreadsheet's "CSV UTF-8") is skipped; bytes that are not UTF-8 come back as
    surrogates, as file names do, so that no re-saved report is refused for its encoding.
    """
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        rows = [{k: from_spreadsheet_text(v) if isinstance(v, str) else v for k, v in row.items()} for row in reader]
        return list(reader.fieldnames or []), rows
