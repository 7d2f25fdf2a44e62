"""Importing labelled data: CLINC150 and BANKING77 from shared/datasets, bad files write nothing."""

import csv
import json
import subprocess
import sys
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


def test_a_csv_byte_order_mark_is_not_part_of_the_header(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\r\nhello there,greet\r\nbye now,bye\r\n")  # as Excel saves "CSV UTF-8"
    assert import_labels(settings, path) == (2, 2)
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "good morning", "label": "greet"}).encode() + b"\n")
    assert import_labels(settings, jsonl) == (1, 1)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("latin1.csv", "text,label\nhello,greet\ncaf\xe9 au lait,order\n".encode("latin-1"),
     r"latin1.csv:3: not UTF-8 text \(byte 0xe9\): save the file as UTF-8; nothing was imported"),
    ("latin1.jsonl", b'{"text": "hello", "label": "greet"}\n{"text": "caf\xe9", "label": "order"}\n',
     r"latin1.jsonl:2: not UTF-8 text \(byte 0xe9 at column 14\): save the file as UTF-8; nothing was imported"),
    ("nul.csv", b"text,label\nhello,greet\nhel\x00lo,greet\n", r"nul.csv:3: text contains a NUL character"),
    ("nul-label.jsonl", json.dumps({"text": "hi", "label": "gr\x00eet"}).encode() + b"\n",
     r"nul-label.jsonl:1: label contains a NUL character; nothing was imported"),
    ("long-label.csv", f"text,label\nhello,{'x' * 201}\n".encode(),
     r"long-label.csv:2: label is 201 characters, the maximum is 200; nothing was imported"),
    ("long-language.jsonl", json.dumps({"text": "hi", "label": "greet", "language": "english-" * 3}).encode(),
     r"long-language.jsonl:1: language is 24 characters, the maximum is 16; nothing was imported"),
    ("bad-split.csv", b"text,label,split\nhello,greet,train\nbye,bye,holdout-set-of-2026\n",
     r"bad-split.csv:3: split 'holdout-set-of-2026' is not one of train, val, test"),
    ("long-split.csv", f"text,label,split\nhello,greet,{'t' * 40}\n".encode(),
     r"long-split.csv:2: split is 40 characters, the maximum is 32; nothing was imported"),
])
def test_bad_bytes_and_over_long_values_are_one_line_naming_the_row(
    settings: Settings, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        import_labels(settings, path, split_col="split" if "split" in name else None)
    assert "\n" not in str(err.value)
    assert _splits(settings) == {}  # nothing written, on either database


def test_data_import_of_a_bad_file_is_one_line_on_stderr(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_bytes(f"text,label\nhello,{'y' * 300}\n".encode())
    res = subprocess.run([sys.executable, "-m", "cli", "data", "import", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"error: {path}:2: label is 300 characters, the maximum is 200; nothing was imported"]
