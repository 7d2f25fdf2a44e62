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

csv.field_size_limit(10_000_000)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise InputError(f"{path}: the CSV file has no header row")
        for row in reader:
            if None in row:
                raise InputError(f"{path}:{reader.line_num}: more fields than the header; nothing was imported")
            yield reader.line_num, row


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
                f"{path}:{lineno}: unknown column {missing[0]!r} (columns: {', '.join(map(str, row))}); "
                "nothing was imported"
            )
        where = f"{path}:{lineno}"
        try:
            text = store.check_text(row[text_col], max_text_length, where)
        except InputError as exc:
            raise InputError(f"{exc}; nothing was imported") from None
        label = row[label_col]
        if not isinstance(label, str | int) or not str(label).strip():
            raise InputError(f"{where}: label is empty; nothing was imported")
        split = str(row[split_col]).strip() if split_col and row[split_col] not in (None, "") else None
        out.append({"text": text.strip(), "label": str(label).strip(), "split": split,
                    "language": row.get("language") or None})
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
