"""Import labelled examples (CSV or JSONL) into `ml_data`: a user's own labels, CLINC150, BANKING77."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import InputError
from intelrouter.groundtruth import insert_labels
from intelrouter.jsonfiles import iter_objects
from intelrouter.keys import SPLITS, known_split

csv.field_size_limit(10_000_000)
NOTHING = "; nothing was imported"
# the widest values ml_data stores (store.ml_data): longer ones are refused here, not by the database
MAX_LABEL, MAX_LANGUAGE = 200, 16


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of the header
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise InputError(f"{path}: the CSV file has no header row")
            try:
                for row in reader:
                    if None in row:
                        raise InputError(f"{path}:{reader.line_num}: more fields than the header{NOTHING}")
                    yield reader.line_num, row
            except csv.Error as exc:
                raise InputError(f"{path}:{reader.line_num}: not a readable CSV row ({exc}){NOTHING}") from None
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _not_utf8(path: Path) -> InputError:
    """The error for a file that is not UTF-8, naming the line of the first bad byte."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return InputError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): save the file as "
                          f"UTF-8{NOTHING}")
    return InputError(f"{path}: not UTF-8 text: save the file as UTF-8{NOTHING}")


def _value(row: dict[str, Any], column: str | None, what: str, where: str, limit: int) -> str | None:
    """An optional string column: stripped, storable, at most `limit` characters."""
    raw = row.get(column) if column else None
    if raw is None or raw == "":
        return None
    value = str(raw).strip()
    if len(value) > limit:
        raise InputError(f"{where}: {what} is {len(value)} characters, the maximum is {limit}{NOTHING}")
    try:
        store.check_storable(value, what)
    except InputError as exc:
        raise InputError(f"{where}: {exc}{NOTHING}") from None
    return value or None


def read_labelled(
    path: Path, text_col: str, label_col: str, split_col: str | None, max_text_length: int
) -> list[dict[str, Any]]:
    """Read and validate a labelled file; any bad line is an InputError naming its line number."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        rows = iter_objects(path)
    else:
        raise InputError(f"{path}: unsupported file type {suffix!r}; use .csv or .jsonl")
    out: list[dict[str, Any]] = []
    wanted = [c for c in (text_col, label_col, split_col) if c]
    for lineno, row in rows:
        missing = [c for c in wanted if c not in row]
        if missing:
            raise InputError(
                f"{path}:{lineno}: unknown column {missing[0]!r} (columns: {', '.join(map(str, row))}){NOTHING}"
            )
        where = f"{path}:{lineno}"
        try:
            text = store.check_text(row[text_col], max_text_length, where)
        except InputError as exc:
            raise InputError(f"{exc}{NOTHING}") from None
        label = row[label_col]
        if not isinstance(label, str | int) or not str(label).strip():
            raise InputError(f"{where}: label is empty{NOTHING}")
        split = _value(row, split_col, "split", where, 32)
        if split is not None and known_split(split) is None:
            raise InputError(f"{where}: split {split[:40]!r} is not one of {', '.join(SPLITS)} (or validation, "
                             f"dev){NOTHING}")
        out.append({"text": text.strip(), "label": _value(row, label_col, "label", where, MAX_LABEL),
                    "split": split, "language": _value(row, "language", "language", where, MAX_LANGUAGE)})
    return out


def import_labels(
    settings: Settings,
    path: Path,
    text_col: str = "text",
    label_col: str = "label",
    split_col: str | None = None,
    source: str = "import",
) -> tuple[int, int]:
    """Import labelled rows into ml_data in one transaction; returns (rows read, rows new)."""
    rows = read_labelled(path, text_col, label_col, split_col, settings.max_text_length)
    with store.connect(settings) as conn:
        return len(rows), insert_labels(conn, rows, source, shares=settings.split_shares)
