"""Export: approved ml_data rows as JSONL, with the seed's filters."""

import json
from pathlib import Path

from sqlalchemy import update

from intelrouter import store
from intelrouter.capture import log_queries
from intelrouter.config import Settings
from intelrouter.export import export_jsonl
from intelrouter.groundtruth import record_override
from intelrouter.triage import triage


def _seed(settings: Settings) -> None:
    log_queries(settings, [
        {"id": "a", "text": "chai order", "language": "hinglish", "predicted_label": "order", "confidence": 0.95,
         "provider": "teacher"},
        {"id": "b", "text": "order tea", "language": "en", "predicted_label": "order", "confidence": 0.86,
         "provider": "teacher"},
        {"id": "c", "text": "track it", "language": "en", "predicted_label": "order", "confidence": 0.3},
        {"id": "d", "text": "bonjour", "language": "fr", "predicted_label": "greet", "confidence": 0.99,
         "provider": "teacher"},
    ])
    triage(settings)
    record_override(settings, "c", "track")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_writes_every_approved_row_with_its_fields(settings: Settings, tmp_path: Path) -> None:
    _seed(settings)
    out = tmp_path / "all.jsonl"
    assert export_jsonl(settings, out) == 4
    rows = _read(out)
    assert set(rows[0]) == {"id", "text", "label", "language", "source", "confidence", "created_at", "split"}
    assert {r["text"]: r["label"] for r in rows}["track it"] == "track"


def test_filters_languages_confidence_limit_unused(settings: Settings, tmp_path: Path) -> None:
    _seed(settings)
    out = tmp_path / "f.jsonl"
    assert export_jsonl(settings, out, languages=["en", "hinglish"]) == 3
    # a human label carries no confidence and is kept; machine labels below the bar are dropped
    assert {r["text"] for r in _read(out)} >= {"track it"}
    assert export_jsonl(settings, out, min_confidence=0.9) == 3
    assert "order tea" not in {r["text"] for r in _read(out)}
    assert export_jsonl(settings, out, limit=2) == 2
    with store.connect(settings) as conn:
        conn.execute(update(store.ml_data).where(store.ml_data.c.query_id == "a").values(trained_version="1.0.0"))
    assert export_jsonl(settings, out, unused_only=True) == 3
