"""Importing labelled data: CLINC150 and BANKING77 from shared/datasets, bad files write nothing."""

import csv
import json
from pathlib import Path

import pytest
from conftest import DATASETS
from sqlalchemy import func, select

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import InputError
from intelrouter.labels import import_labels


def _splits(settings: Settings) -> dict:
    t = store.ml_data
    with store.connect(settings) as conn:
        return dict(conn.execute(select(t.c.split, func.count()).group_by(t.c.split)).all())


def test_clinc150_imports_with_splits_and_reimport_adds_nothing(settings: Settings) -> None:
    path = DATASETS / "clinc150" / "clinc150_full.csv"
    read, new = import_labels(settings, path, "text", "label", "split")
    assert read == 23700
    splits = _splits(settings)
    assert splits["train"] + splits["val"] + splits["test"] == new
    assert splits["test"] > 5000 and splits["train"] > 15000
    assert import_labels(settings, path, "text", "label", "split") == (23700, 0)


def test_banking77_embedded_newlines_are_read_by_a_real_csv_parser(settings: Settings) -> None:
    path = DATASETS / "banking77" / "test.csv"
    with path.open(newline="") as fh:
        distinct = {(r["text"].strip(), r["category"]) for r in csv.DictReader(fh)}
    read, new = import_labels(settings, path, "text", "category")
    assert read == 3080 and new == len(distinct)  # more physical lines than that: quoted newlines
    with store.connect(settings) as conn:
        labels = conn.execute(select(func.count(store.ml_data.c.label.distinct()))).scalar()
    assert labels == 77


def test_jsonl_with_a_bad_line_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "hi", "y": "greet"}) + "\n" + json.dumps({"q": "  ", "y": "greet"}) + "\n")
    with pytest.raises(InputError, match=r"mine.jsonl:2: text is empty"):
        import_labels(settings, path, "q", "y")
    assert _splits(settings) == {}
    path.write_text(json.dumps({"q": "hi", "y": "greet"}) + "\n")
    assert import_labels(settings, path, "q", "y") == (1, 1)


def test_unknown_column_is_named(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("text,label\nhello,greet\n")
    with pytest.raises(InputError, match="unknown column 'intent'"):
        import_labels(settings, path, "text", "intent")
