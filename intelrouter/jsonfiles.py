"""JSON files: reading JSONL input (objects with their line numbers, bad lines named), writing the JSON reports."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intelrouter.errors import InputError

if TYPE_CHECKING:
    from intelrouter.config import Settings


def iter_objects(
    path: Path, suffix: str = "; nothing was imported", torn: list[tuple[int, int]] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a line that is not a JSON object or not UTF-8 is an
    InputError naming it. With a `torn` list, a last line cut short by a crash (no newline, unreadable) is skipped
    and recorded there as (line number, bytes) instead."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            cut_short = torn is not None and not raw.endswith(b"\n")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if cut_short:
                    torn.append((lineno, len(raw)))  # type: ignore[union-attr]
                    continue
                raise InputError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                 f"{exc.start + 1}): save the file as UTF-8{suffix}") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if cut_short:
                    torn.append((lineno, len(raw)))  # type: ignore[union-attr]
                    continue
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg}){suffix}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object{suffix}")
            yield lineno, obj


def write_report(settings: Settings, name: str, payload: dict[str, Any]) -> Path:
    """Write one JSON report under logs/ (atomically: a reader never sees half a file)."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    path = settings.logs_dir / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
