"""Export approved ground truth (`ml_data`) as JSONL, streaming in constant memory (seed 004)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import InputError

EXPORT_FIELDS = ("id", "text", "label", "language", "source", "confidence", "created_at", "split")


def export_query(
    limit: int | None = None,
    languages: Sequence[str] | None = None,
    min_confidence: float | None = None,
    since: datetime | None = None,
    unused_only: bool = False,
) -> Select:
    """The SELECT behind an export; confidence filters keep human labels, which carry none."""
    t = store.ml_data
    stmt = select(*(t.c[f] for f in EXPORT_FIELDS)).order_by(t.c.id)
    if languages:
        stmt = stmt.where(t.c.language.in_(list(languages)))
    if min_confidence is not None:
        stmt = stmt.where((t.c.confidence.is_(None)) | (t.c.confidence >= min_confidence))
    if since is not None:
        stmt = stmt.where(t.c.created_at >= since)
    if unused_only:
        stmt = stmt.where(t.c.trained_version.is_(None))
    if limit is not None:
        if limit < 0:
            raise InputError(f"--limit must be positive, got {limit}")
        stmt = stmt.limit(limit)
    return stmt


def iter_rows(settings: Settings, stmt: Select, chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Stream the rows of `stmt` with a server-side cursor, `chunk` at a time."""
    with store.connect(settings) as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
        for row in result.mappings():
            yield dict(row)


def export_jsonl(settings: Settings, output: Path, **filters: Any) -> int:
    """Write the filtered approved rows to `output` as JSONL; returns how many rows were written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    written = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in iter_rows(settings, export_query(**filters)):
                row["created_at"] = row["created_at"].isoformat()
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
        os.replace(tmp, output)  # a failed export never leaves a truncated file behind
    finally:
        tmp.unlink(missing_ok=True)
    return written
