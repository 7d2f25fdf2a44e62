"""Quality benchmarks on public intent datasets, trained through the production path (`train.fit_router`).

CLINC150 follows Larson et al. 2019: fit on the in-scope `train` split (the `oos_train` rows are not used),
choose the UNCERTAIN threshold on `val` + `oos_val`, report in-scope accuracy on `test` (an in-scope query
answered UNCERTAIN counts as wrong) and out-of-scope recall on `oos_test`. BANKING77 has no validation split:
a stratified part of `train` is carved out for calibration and the threshold, and accuracy is counted on
`test`. No choice is ever made on a test split: test rows are scored once, after everything is fixed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from intelrouter.config import Settings
from intelrouter.data import carve
from intelrouter.errors import InputError
from intelrouter.evaluate import choose_threshold, expected_calibration_error, score
from intelrouter.model import Router
from intelrouter.train import TrainOptions, fit_router, make_features

DATASETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"
OOS = "oos"


@dataclass
class BenchData:
    """A benchmark's parts: training rows, validation rows (may hold OOS rows) and test rows."""

    name: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    protocol: str


@dataclass
class BenchResult:
    """What one benchmark run measured."""

    dataset: str
    protocol: str
    config: dict[str, Any]
    rows: dict[str, int]
    timings: dict[str, float]
    size_bytes: int
    rows_by_policy: list[dict[str, Any]] = field(default_factory=list)
    accuracy: float = 0.0
    val_accuracy: float = 0.0
    macro_f1: float = 0.0
    ece: float = 0.0
    ece_val: float = 0.0
    temperature: float = 1.0
    one_text_us: float = 0.0
    batch256_us: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able data."""
        return {k: v for k, v in self.__dict__.items()}


def _frame(pairs: list[list[str]], split: str) -> pd.DataFrame:
    return pd.DataFrame({"text": [p[0] for p in pairs], "label": [p[1] for p in pairs], "split": split})


def load_clinc150(datasets_dir: Path = DATASETS_DIR, variant: str = "full") -> BenchData:
    """CLINC150 by Larson et al.'s protocol; `variant` picks the training set (full, small, imbalanced)."""
    path = Path(datasets_dir) / "clinc150" / f"data_{variant}.json"
    if not path.is_file():
        raise InputError(f"{path}: no such file (pass --datasets DIR holding clinc150/data_{variant}.json)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return BenchData(
        name=f"clinc150-{variant}",
        train=_frame(data["train"], "train"),
        val=pd.concat([_frame(data["val"], "val"), _frame(data["oos_val"], "val")], ignore_index=True),
        test=pd.concat([_frame(data["test"], "test"), _frame(data["oos_test"], "test")], ignore_index=True),
        protocol="Larson et al. 2019: fit on in-scope train; threshold on val + oos_val; "
        "in-scope accuracy on test (UNCERTAIN = wrong), OOS recall on oos_test",
    )


def load_banking77(datasets_dir: Path = DATASETS_DIR, val_share: float = 0.1, seed: int = 42) -> BenchData:
    """BANKING77: test as published; validation carved (stratified, `val_share`) from train."""
    base = Path(datasets_dir) / "banking77"
    if not (base / "train.csv").is_file():
        raise InputError(f"{base / 'train.csv'}: no such file (pass --datasets DIR holding banking77/)")
    read = dict(keep_default_na=False, dtype=str)
    train = pd.read_csv(base / "train.csv", **read).rename(columns={"category": "label"})
    test = pd.read_csv(base / "test.csv", **read).rename(columns={"category": "label"})
    return _carved("banking77", train, test, val_share, seed,
                   f"accuracy on test; calibration and threshold on {val_share:.0%} of train (stratified, seed {seed})")


def load_file(path: Path, val_share: float = 0.1, seed: int = 42) -> BenchData:
    """A CSV or JSONL file with text, label and split (train/val/test); no val → carved from train."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (use clinc150, banking77 or a CSV/JSONL with text,label,split)")
    try:
        frame = pd.read_json(path, lines=True, dtype=False) if path.suffix in (".jsonl", ".json") else pd.read_csv(
            path, keep_default_na=False, dtype=str)
    except ValueError as exc:
        raise InputError(f"{path}: cannot read it as {'JSONL' if path.suffix.startswith('.json') else 'CSV'}: "
                         f"{exc}") from None
    missing = {"text", "label", "split"} - set(frame.columns)
    if missing:
        raise InputError(f"{path}: needs columns text, label and split (missing {', '.join(sorted(missing))})")
    frame = frame.astype({"text": str, "label": str, "split": str})
    split = frame["split"].str.strip().str.lower()
    train, val, test = frame[split == "train"], frame[split.isin(["val", "validation", "dev"])], frame[split == "test"]
    if train.empty or test.empty:
        raise InputError(f"{path}: needs rows with split `train` and rows with split `test`")
    if val.empty:
        return _carved(path.stem, train, test, val_share, seed, f"accuracy on test; validation carved from train "
                       f"({val_share:.0%}, seed {seed})")
    return BenchData(path.stem, train.reset_index(drop=True), val.reset_index(drop=True), test.reset_index(drop=True),
                     "accuracy on test; calibration and threshold on the file's val rows")


def _carved(name: str, train: pd.DataFrame, test: pd.DataFrame, share: float, seed: int, protocol: str) -> BenchData:
    train = train.reset_index(drop=True)
    is_val = carve(train, np.ones(len(train), dtype=bool), share, np.random.default_rng(seed))
    return BenchData(name, train[~is_val].reset_index(drop=True), train[is_val].reset_index(drop=True),
                     test.reset_index(drop=True), protocol)


def load(dataset: str, datasets_dir: Path = DATASETS_DIR) -> BenchData:
    """A benchmark by name (clinc150, clinc150-small, clinc150-imbalanced, banking77) or a file path."""
    if dataset == "clinc150":
        return load_clinc150(datasets_dir)
    if dataset.startswith("clinc150-"):
        return load_clinc150(datasets_dir, dataset.split("-", 1)[1])
    if dataset == "banking77":
        return load_banking77(datasets_dir)
    return load_file(Path(dataset))


def inference_cost(router: Router, texts: list[str], rounds: int = 3) -> tuple[float, float]:
    """Best-of-rounds µs per text: `predict_one` one text at a time, and `predict` in batches of 256."""
    one, batch = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for text in texts:
            router.predict_one(text)
        one.append((time.perf_counter() - t0) / len(texts))
        t0 = time.perf_counter()
        for i in range(0, len(texts), 256):
            router.predict(texts[i : i + 256])
        batch.append((time.perf_counter() - t0) / len(texts))
    return min(one) * 1e6, min(batch) * 1e6


def policy_row(policy: str, threshold: float, test_conf: np.ndarray, test_correct: np.ndarray,
               oos_conf: np.ndarray) -> dict[str, Any]:
    """Larson's two numbers at one threshold: in-scope accuracy (answered and right) and OOS recall."""
    answered = test_conf >= threshold
    return {
        "policy": policy, "threshold": float(threshold),
        "inscope_accuracy": float(np.mean(test_correct & answered)) if len(test_conf) else 0.0,
        "oos_recall": float(np.mean(oos_conf < threshold)) if len(oos_conf) else None,
        "coverage": float(np.mean(answered)) if len(test_conf) else 0.0,
    }


def run(data: BenchData, settings: Settings, options: TrainOptions | None = None,
        policies: tuple[str, ...] = ("accuracy", "balanced"), timing_texts: int = 2000) -> BenchResult:
    """Fit through `fit_router` (threshold by the first policy), then score the test rows once."""
    from sklearn.metrics import f1_score

    options = options or TrainOptions()
    settings = settings.model_copy(update={"threshold_policy": policies[0]})
    load_before = os.getloadavg()[0]  # 1-minute load average: timings on a shared machine need it beside them
    router, timings = fit_router(data.train, data.val, make_features(settings, options), options, settings)
    timings["load_1min"] = load_before
    # an ensemble reports its members' own wall and thread-CPU seconds (fitted side by side in two threads)
    member_s = getattr(router.pipeline.steps[-1][1], "member_fit_s_", {})
    timings.update({f"member_{k}_s": v for k, v in member_s.items()})
    with tempfile.TemporaryDirectory() as tmp:
        size = router.save(Path(tmp) / "router.pkl").stat().st_size

    # every threshold comes from the validation rows only
    val = score(router, data.val)
    val_oos = data.val["label"].to_numpy(dtype=object) == OOS
    val_conf, val_correct = val.confidence, val.correct
    thresholds = {policies[0]: router.threshold}
    for policy in policies[1:]:
        thresholds[policy], _ = choose_threshold(policy, val_conf[~val_oos], val_correct[~val_oos],
                                                 val_conf[val_oos], settings.uncertain_threshold,
                                                 settings.target_coverage)

    t0 = time.perf_counter()
    test = score(router, data.test)
    timings["evaluate_s"] = time.perf_counter() - t0
    truth = data.test["label"].to_numpy(dtype=object)
    is_oos = truth == OOS
    conf, top, correct = test.confidence, test.top, test.correct
    texts = data.test.loc[~is_oos, "text"].tolist()[:timing_texts]
    one_us, batch_us = inference_cost(router, texts)
    return BenchResult(
        dataset=data.name, protocol=data.protocol,
        config={"classifier": router.info["classifier"], "C": options.C, "feature_set": router.info["feature_set"],
                "n_features": router.info["n_features"], "features": options.features},
        rows={"train": len(data.train), "val": len(data.val), "val_oos": int(val_oos.sum()),
              "test": int((~is_oos).sum()), "test_oos": int(is_oos.sum())},
        timings={k: round(v, 3) for k, v in timings.items()},
        size_bytes=size,
        rows_by_policy=[policy_row(p, t, conf[~is_oos], correct[~is_oos], conf[is_oos]) for p, t in thresholds.items()],
        accuracy=float(correct[~is_oos].mean()),
        val_accuracy=float(val_correct[~val_oos].mean()) if (~val_oos).any() else 0.0,
        macro_f1=float(f1_score(truth[~is_oos], top[~is_oos], average="macro", zero_division=0)),
        ece=expected_calibration_error(conf[~is_oos], correct[~is_oos]),
        ece_val=expected_calibration_error(val_conf[~val_oos], val_correct[~val_oos]),
        temperature=float(router.info.get("temperature", 1.0)),
        one_text_us=one_us, batch256_us=batch_us,
    )


def to_markdown(result: BenchResult) -> str:
    """A markdown block of one result."""
    r, t = result, result.timings
    fit = t.get("featurise_s", 0) + t.get("fit_s", 0)
    lines = [
        f"**{r.dataset}** ({r.protocol}); {r.config['classifier']} C={r.config['C']:g}, features "
        f"`{r.config['feature_set']}` ({r.config['n_features']:,} columns); rows {r.rows}",
        "",
        "| threshold rule (on validation) | threshold | in-scope acc (test) | OOS recall (oos_test) | coverage |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in r.rows_by_policy:
        recall = "–" if row["oos_recall"] is None else f"{row['oos_recall']:.2%}"
        lines.append(f"| {row['policy']} | {row['threshold']:.3f} | {row['inscope_accuracy']:.2%} | {recall} | "
                     f"{row['coverage']:.2%} |")
    lines += [
        "",
        f"- accuracy (argmax, no threshold) {r.accuracy:.2%} (validation {r.val_accuracy:.2%}), macro F1 "
        f"{r.macro_f1:.2%}; ECE test {r.ece:.4f} (validation {r.ece_val:.4f}), temperature {r.temperature:.3f}",
        f"- fit {fit:.2f} s (featurise {t.get('featurise_s', 0):.2f} + fit {t.get('fit_s', 0):.2f}; calibration and "
        f"threshold {t.get('threshold_s', 0):.2f}; load average {t.get('load_1min', 0):.2f}); model on disk "
        f"{r.size_bytes / 1e6:.1f} MB; predict_one {r.one_text_us:.0f} µs/text; batches of 256 "
        f"{r.batch256_us:.0f} µs/text",
    ]
    members = {k[len("member_"):-2]: v for k, v in t.items() if k.startswith("member_")}
    if members:
        lines.append("- members fitted side by side: " + ", ".join(
            f"{m} {members[m]:.2f} s wall / {members.get(m + '_cpu', 0):.2f} s CPU" for m in members
            if not m.endswith("_cpu")))
    return "\n".join(lines)
