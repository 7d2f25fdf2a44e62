"""The quality benchmark: the published protocols' splits, no test data in any choice, and the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATASETS
from training_support import cli_env, synthetic_rows

from intelrouter import benchmark
from intelrouter.errors import InputError
from intelrouter.train import TrainOptions


def test_clinc150_follows_larsons_splits() -> None:
    data = benchmark.load("clinc150", DATASETS)
    assert len(data.train) == 15000 and "oos" not in set(data.train["label"])  # oos_train is not used
    assert len(data.val) == 3100 and (data.val["label"] == "oos").sum() == 100
    assert len(data.test) == 5500 and (data.test["label"] == "oos").sum() == 1000
    small = benchmark.load("clinc150-small", DATASETS)
    assert len(small.train) == 7500 and small.test.equals(data.test)


def test_banking77_validation_is_carved_from_train_only() -> None:
    data = benchmark.load("banking77", DATASETS)
    assert len(data.test) == 3080 and len(data.train) + len(data.val) == 10003
    assert data.val["label"].nunique() == 77 and not set(data.val["text"]) & set(data.train["text"])
    train_csv = pd.read_csv(DATASETS / "banking77" / "train.csv", keep_default_na=False)
    assert set(data.val["text"]) <= set(train_csv["text"])


def _file(tmp_path: Path) -> Path:
    rows = [r | {"split": "train"} for r in synthetic_rows(30, seed=1) if r["label"] != "oos"]
    rows += [r | {"split": "val"} for r in synthetic_rows(10, oos=10, seed=2)]
    rows += [r | {"split": "test"} for r in synthetic_rows(10, oos=10, seed=3)]
    path = tmp_path / "intents.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_test_rows_influence_no_choice(tmp_path: Path, settings) -> None:  # noqa: ANN001
    data = benchmark.load(str(_file(tmp_path)))
    first = benchmark.run(data, settings, TrainOptions(), timing_texts=20)
    shuffled = data.test.assign(label=np.random.default_rng(0).permutation(data.test["label"].to_numpy()))
    second = benchmark.run(benchmark.BenchData(data.name, data.train, data.val, shuffled, data.protocol), settings,
                           TrainOptions(), timing_texts=20)
    # thresholds and temperature come from train + validation only: scrambling the test labels changes none
    assert [r["threshold"] for r in first.rows_by_policy] == [r["threshold"] for r in second.rows_by_policy]
    assert first.temperature == second.temperature and first.ece_val == second.ece_val
    assert first.accuracy > 0.9 and second.accuracy < 0.6
    assert [r["policy"] for r in first.rows_by_policy] == ["accuracy", "balanced"]
    accuracy_rule, balanced = first.rows_by_policy
    assert accuracy_rule["inscope_accuracy"] <= first.accuracy and accuracy_rule["oos_recall"] is not None
    assert 0 <= balanced["oos_recall"] <= 1 and balanced["threshold"] != settings.uncertain_threshold
    assert first.size_bytes > 0 and first.one_text_us > 0 and first.batch256_us > 0
    assert "| accuracy |" in benchmark.to_markdown(first)


def test_bad_files_are_one_line_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        benchmark.load(str(tmp_path / "missing.csv"))
    (tmp_path / "cols.csv").write_text("text,label\nhi,a\n")
    with pytest.raises(InputError, match="needs columns text, label and split"):
        benchmark.load(str(tmp_path / "cols.csv"))
    (tmp_path / "notest.csv").write_text("text,label,split\nhi,a,train\n")
    with pytest.raises(InputError, match="split `test`"):
        benchmark.load(str(tmp_path / "notest.csv"))


def test_cli_benchmark_prints_the_rows_and_rejects_bad_options(tmp_path: Path, settings) -> None:  # noqa: ANN001
    path = _file(tmp_path)
    done = subprocess.run(["intelrouter", "benchmark", str(path), "--json"], env=cli_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["rows"] == {"train": 120, "val": 50, "val_oos": 10, "test": 40, "test_oos": 10}
    assert out["config"]["classifier"] == settings.classifier
    bad = subprocess.run(["intelrouter", "benchmark", str(path), "--features", '{"colour": 1}'], env=cli_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: bad --features") and "Traceback" not in bad.stderr
