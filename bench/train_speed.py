"""Training speed on CLINC150 against a plain lbfgs LogisticRegression anchor measured in the same run.

Prints a markdown block for BENCHMARKS.md: featurise / fit / evaluate split out, the anchor ratio, a solver
table on the production features, the whole `intelrouter train` command, and a cost curve by row count.

    .venv/bin/python bench/train_speed.py                      # everything (the 1 M point takes minutes)
    .venv/bin/python bench/train_speed.py --curve 10000,100000 --no-solvers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from intelrouter.classifiers import TemperatureScaled, make_classifier
from intelrouter.config import load_settings, telemetry_off
from intelrouter.features import TextFeatures
from intelrouter.labels import import_labels

REPO = Path(__file__).resolve().parents[1]
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "clinc150_full.csv"

warnings.filterwarnings("ignore", category=ConvergenceWarning)


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def load() -> dict[str, pd.DataFrame]:
    """CLINC150 parts: in-scope train/val/test, OOS val/test."""
    frame = pd.read_csv(CLINC)
    inscope = frame["label"] != "oos"
    return {
        "train": frame[inscope & (frame["split"] == "train")],
        "val": frame[inscope & (frame["split"] == "val")],
        "test": frame[inscope & (frame["split"] == "test")],
        "oos_test": frame[~inscope & (frame["split"] == "test")],
    }


def anchor(parts: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Plain lbfgs LogisticRegression on word (1-2) + char_wb (2-5) TF-IDF, float64, no tricks."""
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    texts = parts["train"]["text"].tolist()

    def featurise() -> sp.csr_matrix:
        return sp.hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()

    x, t_feat = timed(featurise)
    clf = LogisticRegression(C=10, max_iter=1000)
    _, t_fit = timed(clf.fit, x, parts["train"]["label"].to_numpy())
    test = parts["test"]["text"].tolist()
    xt = sp.hstack([words.transform(test), chars.transform(test)]).tocsr()
    acc = float(np.mean(clf.predict(xt) == parts["test"]["label"].to_numpy()))
    return {"featurise_s": t_feat, "fit_s": t_fit, "accuracy": acc, "n_features": x.shape[1], "nnz": x.nnz,
            "n_iter": int(np.max(clf.n_iter_))}


def production(parts: dict[str, pd.DataFrame], classifier: Any = None) -> dict[str, float]:
    """The shipped pipeline's steps, timed one by one (features, classifier, evaluation)."""
    features = TextFeatures()
    x, t_feat = timed(features.fit_transform, parts["train"]["text"].tolist())
    clf = classifier if classifier is not None else make_classifier("lr")
    _, t_fit = timed(clf.fit, x, parts["train"]["label"].to_numpy())
    if isinstance(clf, TemperatureScaled):
        clf.calibrate(features.transform(parts["val"]["text"].tolist()), parts["val"]["label"].tolist())

    def evaluate() -> float:
        xt = features.transform(parts["test"]["text"].tolist())
        return float(np.mean(clf.predict(xt) == parts["test"]["label"].to_numpy()))

    acc, t_eval = timed(evaluate)
    return {"featurise_s": t_feat, "fit_s": t_fit, "evaluate_s": t_eval, "accuracy": acc,
            "n_features": x.shape[1], "nnz": x.nnz, "features": features.feature_set_id()}


def solvers(parts: dict[str, pd.DataFrame]) -> list[tuple[str, dict[str, float]]]:
    """Other final steps on the production features (same run, same data)."""
    options = {
        "LR sag, 10 epochs, C=10 (shipped `lr`)": make_classifier("lr"),
        "LR saga, tol 1e-2, ≤30 epochs": LogisticRegression(C=10, solver="saga", tol=1e-2, max_iter=30),
        "LR lbfgs, C=10 (`lr-lbfgs`)": make_classifier("lr-lbfgs"),
        "LR liblinear one-vs-rest (dual)": OneVsRestClassifier(LogisticRegression(C=10, solver="liblinear",
                                                                                  dual=True, tol=1e-2)),
        "SGD hinge + softmax temperature (`sgd`)": make_classifier("sgd"),
        "LinearSVC + softmax temperature (`svc`)": make_classifier("svc"),
    }
    return [(name, production(parts, clf)) for name, clf in options.items()]


def perturb(texts: list[str], n: int, seed: int = 0) -> list[str]:
    """n texts resampled from `texts`, each with a light word drop/swap so the set is not n copies."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choice(texts).split()
        if len(words) > 3 and rng.random() < 0.5:
            del words[rng.randrange(len(words))]
        if len(words) > 2 and rng.random() < 0.5:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words))
    return out


def cost_point(parts: dict[str, pd.DataFrame], n: int) -> dict[str, float]:
    """Featurise + fit of the shipped pipeline on n resampled rows; accuracy on the real test split."""
    rng = np.random.default_rng(n)
    train = parts["train"]
    idx = rng.integers(0, len(train), n)
    labels = train["label"].to_numpy()[idx]
    source = train["text"].tolist()
    texts = [perturb([source[i]], 1, seed=int(k))[0] for k, i in enumerate(idx)]
    features = TextFeatures()
    x, t_feat = timed(features.fit_transform, texts)
    clf = make_classifier("lr")
    _, t_fit = timed(clf.fit, x, labels)
    acc = float(np.mean(clf.predict(features.transform(parts["test"]["text"].tolist()))
                        == parts["test"]["label"].to_numpy()))
    return {"rows": n, "featurise_s": t_feat, "fit_s": t_fit, "accuracy": acc, "nnz": x.nnz}


def whole_command() -> dict[str, Any]:
    """`intelrouter data import` of CLINC150, then `intelrouter train --threshold-policy balanced`, timed."""
    venv_bin = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        env = telemetry_off({**os.environ, "INTELROUTER_DATA_DIR": tmp, "GIT_PYTHON_REFRESH": "quiet",
                             "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"})
        env.pop("INTELROUTER_DATABASE_URL", None)
        env.pop("INTELROUTER_MLFLOW_TRACKING_URI", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        os.environ["INTELROUTER_DATA_DIR"] = tmp
        import_labels(load_settings(data_dir=Path(tmp)), CLINC, split_col="split")
        t0 = time.perf_counter()
        done = subprocess.run([str(venv_bin / "intelrouter"), "train", "--threshold-policy", "balanced", "--json"],
                              env=env, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"intelrouter train failed: {done.stderr[-2000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in Path(tmp, "mlartifacts").rglob("router.pkl"))
    return {"wall_s": wall, "timings": out["timings"], "metrics": out["metrics"], "threshold": out["threshold"],
            "artifact_mb": size / 1e6}


def main() -> None:
    """Run the measurements and print the markdown block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-anchor", action="store_true", help="skip the lbfgs anchor (about a minute)")
    parser.add_argument("--no-solvers", action="store_true", help="skip the solver table")
    parser.add_argument("--no-command", action="store_true", help="skip the whole `intelrouter train` command")
    parser.add_argument("--curve", default="10000,100000,1000000", help="row counts of the cost curve ('' skips)")
    args = parser.parse_args()

    parts = load()
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; CLINC150 full: {len(parts['train'])} train rows, 150 labels, "
             f"{len(parts['test'])} in-scope test rows. Times are wall-clock seconds on a shared machine.", ""]
    ours = production(parts)
    base = None if args.no_anchor else anchor(parts)
    lines += ["| pipeline | featurise s | fit s | evaluate s | features | nnz | in-scope acc |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    if base:
        lines.append(f"| anchor: word+char TF-IDF, LR lbfgs C=10 ({base['n_iter']} iterations) | "
                     f"{base['featurise_s']:.2f} | {base['fit_s']:.2f} | – | {base['n_features']} | {base['nnz']} | "
                     f"{base['accuracy']:.4f} |")
    lines.append(f"| shipped: `{ours['features']}`, float32, LR sag 10 epochs | {ours['featurise_s']:.2f} | "
                 f"{ours['fit_s']:.2f} | {ours['evaluate_s']:.2f} | {ours['n_features']} | {ours['nnz']} | "
                 f"{ours['accuracy']:.4f} |")
    if base:
        lines += ["", f"**Fit speed-up vs the anchor: {base['fit_s'] / ours['fit_s']:.1f}×** "
                      f"(accuracy {ours['accuracy'] - base['accuracy']:+.4f})."]
    if not args.no_solvers:
        lines += ["", "Final step on the shipped features (same run):", "",
                  "| final step | fit s | in-scope acc |", "|---|---:|---:|"]
        for name, r in solvers(parts):
            lines.append(f"| {name} | {r['fit_s']:.2f} | {r['accuracy']:.4f} |")
    if not args.no_command:
        cmd = whole_command()
        t, m = cmd["timings"], cmd["metrics"]
        lines += ["", "Whole command, `intelrouter train --threshold-policy balanced` on CLINC150 imported into "
                      "a fresh SQLite store + MLflow SQLite tracking (process start and imports included):", "",
                  "| wall s | load | featurise | fit | threshold | evaluate | gate | log | register | in-scope acc "
                  "| OOS recall | threshold | router.pkl MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {cmd['wall_s']:.1f} | {t['load_s']:.2f} | {t['featurise_s']:.2f} | {t['fit_s']:.2f} | "
                  f"{t['threshold_s']:.2f} | {t['evaluate_s']:.2f} | {t['gate_s']:.2f} | {t['log_s']:.2f} | "
                  f"{t['register_s']:.2f} | {m['test_accuracy']:.4f} | {m['test_oos_recall']:.4f} | "
                  f"{cmd['threshold']:.3f} | {cmd['artifact_mb']:.1f} |"]
    sizes = [int(s) for s in args.curve.split(",") if s.strip()]
    if sizes:
        lines += ["", "Cost curve (shipped pipeline, resampled CLINC150 texts with a word drop/swap; "
                      "accuracy on the real test split):", "",
                  "| rows | featurise s | fit s | total s | rows/s | nnz | in-scope acc |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sizes:
            r = cost_point(parts, n)
            total = r["featurise_s"] + r["fit_s"]
            lines.append(f"| {n:,} | {r['featurise_s']:.1f} | {r['fit_s']:.1f} | {total:.1f} | {n / total:,.0f} | "
                         f"{r['nnz']:,} | {r['accuracy']:.4f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
