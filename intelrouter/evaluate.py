"""Evaluation: slice metrics, the UNCERTAIN threshold policies, calibration, and the run's plots and tables."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intelrouter.errors import InputError

POLICIES = ("fixed", "coverage", "balanced", "accuracy")


@dataclass
class Scored:
    """A model's answers on some rows: truth, probabilities, and the model's label order."""

    y_true: list[str]
    proba: np.ndarray
    labels: list[str]

    @property
    def top(self) -> list[str]:
        """The argmax label of each row."""
        if len(self.y_true) == 0:
            return []
        return [self.labels[k] for k in self.proba.argmax(axis=1)]

    @property
    def confidence(self) -> np.ndarray:
        """The top probability of each row."""
        return self.proba.max(axis=1) if len(self.y_true) else np.zeros(0)

    def subset(self, mask: np.ndarray) -> Scored:
        """Only the rows where mask is true."""
        return Scored([y for y, m in zip(self.y_true, mask, strict=True) if m], self.proba[mask], self.labels)


def choose_threshold(
    policy: str,
    confidence_in: np.ndarray,
    correct_in: np.ndarray,
    confidence_oos: np.ndarray | None = None,
    fixed: float = 0.6,
    target_coverage: float = 0.9,
) -> tuple[float, str]:
    """The UNCERTAIN threshold by policy, on held-out rows; returns (threshold, policy actually used).

    fixed: `fixed`. coverage: the highest threshold answering at least `target_coverage` of the in-scope
    rows. balanced: maximise the mean of in-scope accuracy (right and answered) and out-of-scope recall
    (not answered). accuracy: maximise the accuracy over all rows with out-of-scope as one more class
    (Larson et al. 2019's rule: in-scope right and answered, out-of-scope not answered). Without
    out-of-scope rows, balanced and accuracy fall back to `fixed`.
    """
    if policy not in POLICIES:
        raise InputError(f"unknown threshold policy {policy!r}: use one of {', '.join(POLICIES)}")
    conf = np.asarray(confidence_in, dtype=np.float64)
    if policy == "fixed" or len(conf) == 0:
        return float(fixed), "fixed"
    if policy == "coverage":
        ordered = np.sort(conf)[::-1]
        k = max(math.ceil(target_coverage * len(ordered)) - 1, 0)
        return float(ordered[k]), "coverage"
    oos = np.asarray(confidence_oos if confidence_oos is not None else [], dtype=np.float64)
    if len(oos) == 0:
        return float(fixed), "fixed"
    correct = np.asarray(correct_in, dtype=bool)
    candidates = np.unique(np.concatenate([conf, oos, [0.0]]))
    # score(t) = mean(correct & conf >= t) and mean(oos < t), vectorised over all candidate thresholds
    order = np.argsort(conf)
    conf_sorted, correct_sorted = conf[order], correct[order]
    correct_at_or_above = np.concatenate([np.cumsum(correct_sorted[::-1])[::-1], [0]])
    in_acc = correct_at_or_above[np.searchsorted(conf_sorted, candidates, side="left")] / len(conf)
    oos_recall = np.searchsorted(np.sort(oos), candidates, side="left") / len(oos)
    if policy == "accuracy":
        score = (in_acc * len(conf) + oos_recall * len(oos)) / (len(conf) + len(oos))
    else:
        score = (in_acc + oos_recall) / 2
    best = int(np.argmax(score))  # ties: the lowest threshold, which answers the most
    return float(candidates[best]), policy


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the weighted gap between confidence and accuracy over equal-width confidence bins."""
    conf = np.asarray(confidence, dtype=np.float64)
    if len(conf) == 0:
        return 0.0
    correct = np.asarray(correct, dtype=np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(correct[mask].mean() - conf[mask].mean())
    return float(total / len(conf))


def slice_metrics(scored: Scored, threshold: float, oos_label: str) -> dict[str, float]:
    """Metrics of one slice: accuracy, F1s, coverage, selective accuracy, uncertain rate, ECE, OOS recall."""
    from sklearn.metrics import f1_score

    y = np.array(scored.y_true, dtype=object)
    is_oos = y == oos_label
    inscope = scored.subset(~is_oos)
    out: dict[str, float] = {"rows": float(len(y)), "inscope_rows": float(len(inscope.y_true))}
    if len(inscope.y_true):
        top = np.array(inscope.top, dtype=object)
        truth = np.array(inscope.y_true, dtype=object)
        correct = top == truth
        answered = inscope.confidence >= threshold
        labels = sorted(set(inscope.y_true))
        per_class = f1_score(truth, top, labels=labels, average=None, zero_division=0)
        out.update({
            "accuracy": float(correct.mean()),
            "macro_f1": float(f1_score(truth, top, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(truth, top, average="weighted", zero_division=0)),
            "coverage": float(answered.mean()),
            "answered_accuracy": float(correct[answered].mean()) if answered.any() else 0.0,
            "uncertain_rate": float(1 - answered.mean()),
            "ece": expected_calibration_error(inscope.confidence, correct),
            "inscope_accuracy_at_threshold": float((correct & answered).mean()),
        })
        out.update({f"f1_{metric_key(lab)}": float(v) for lab, v in zip(labels, per_class, strict=True)})
    if is_oos.any():
        oos_conf = scored.subset(is_oos).confidence
        out["oos_rows"] = float(is_oos.sum())
        out["oos_recall"] = float((oos_conf < threshold).mean())
    return out


def metric_key(label: str) -> str:
    """A label made safe for an MLflow metric name."""
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", str(label))[:200]


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and risk (error rate among answered) when answering the k most confident rows, k = 1..n."""
    order = np.argsort(-np.asarray(confidence))
    wrong = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    k = np.arange(1, len(order) + 1)
    return k / max(len(order), 1), np.cumsum(wrong) / k


def write_plots(scored: Scored, threshold: float, oos_label: str, out_dir: Path) -> list[Path]:
    """Confusion matrix, risk–coverage curve and reliability diagram of the in-scope rows, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inscope = scored.subset(np.array(scored.y_true, dtype=object) != oos_label)
    if not inscope.y_true:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = np.array(inscope.y_true, dtype=object)
    top = np.array(inscope.top, dtype=object)
    correct = truth == top
    conf = inscope.confidence
    paths = []

    labels = sorted(set(truth) | set(top))
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)))
    np.add.at(matrix, ([index[t] for t in truth], [index[p] for p in top]), 1)
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(4 + len(labels) * 0.12, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 80:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=max(4, 10 - len(labels) // 10))
        ax.set_yticks(range(len(labels)), labels, fontsize=max(4, 10 - len(labels) // 10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (row-normalised)")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "confusion_matrix.png"))

    coverage, risk = risk_coverage(conf, correct)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(coverage, risk)
    answered = conf >= threshold
    if answered.any():
        ax.scatter([answered.mean()], [1 - correct[answered].mean()], color="red", zorder=3,
                   label=f"threshold {threshold:.3f}")
        ax.legend()
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("risk (error rate among answered)")
    ax.set_title("Risk–coverage")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "risk_coverage.png"))

    bins = 15
    which = np.minimum((conf * bins).astype(int), bins - 1)
    centers, accs, counts = [], [], []
    for b in range(bins):
        mask = which == b
        if mask.any():
            centers.append(conf[mask].mean())
            accs.append(correct[mask].mean())
            counts.append(mask.sum())
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.scatter(centers, accs, s=[10 + 200 * c / max(counts) for c in counts])
    ax.plot(centers, accs)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {expected_calibration_error(conf, correct):.3f})")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "reliability.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_tables(scored: Scored, texts: Sequence[str], threshold: float, oos_label: str, out_dir: Path) -> list[Path]:
    """The classification report (text) and the misclassified examples (CSV)."""
    import pandas as pd
    from sklearn.metrics import classification_report

    out_dir.mkdir(parents=True, exist_ok=True)
    y = np.array(scored.y_true, dtype=object)
    top = np.array(scored.top, dtype=object)
    conf = scored.confidence
    inscope = y != oos_label
    report = classification_report(y[inscope], top[inscope], zero_division=0) if inscope.any() else "no rows\n"
    report_path = out_dir / "classification_report.txt"
    report_path.write_text(report)
    predicted = np.where(conf >= threshold, top, "UNCERTAIN")
    wrong = np.where(inscope, top != y, conf >= threshold)
    frame = pd.DataFrame({
        "text": [texts[i] for i in np.flatnonzero(wrong)],
        "true_label": y[wrong],
        "top_label": top[wrong],
        "predicted": predicted[wrong],
        "confidence": conf[wrong].round(4),
    }).sort_values("confidence", ascending=False)
    csv_path = out_dir / "misclassified.csv"
    frame.to_csv(csv_path, index=False)
    return [report_path, csv_path]


def compare_with_production(settings: Any, model_uri: str, source: str = "db") -> dict[str, Any]:
    """Score a model URI and @production on the same rows (the test split if the data has one); logs a run."""
    import os
    import time

    import mlflow

    from intelrouter import registry
    from intelrouter.gate import gate
    from intelrouter.model import load_router
    from intelrouter.train import ensure_experiment, gate_rules, gate_slices, load_examples, recent_mask, score

    frame, where = load_examples(settings, source)
    has_test = (frame["split"] == "test").fillna(False)
    rows = frame[has_test].reset_index(drop=True) if has_test.any() else frame
    if rows.empty:
        raise InputError(f"no labelled rows to evaluate on in {where}")
    candidate = load_router(model_uri, settings.tracking_uri)
    recent = recent_mask(rows, settings.recent_days)
    models = {"candidate": candidate}
    production = registry.load_alias(settings, "production")
    if production is not None:
        models["production"] = production[1]
    metrics: dict[str, dict[str, float]] = {}
    slices = {}
    for name, router in models.items():
        scored = score(router, rows)
        slices[name] = gate_slices(scored, recent, settings.oos_label)
        for slice_name, mask in (("test", np.ones(len(rows), dtype=bool)), ("recent", recent)):
            values = slice_metrics(scored.subset(mask), router.threshold, settings.oos_label)
            metrics[f"{name}_{slice_name}"] = {k: v for k, v in values.items() if not k.startswith("f1_")}
    decision = gate(slices["candidate"], slices.get("production"), gate_rules(settings))
    experiment_id = ensure_experiment(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    launched = os.environ.get("MLFLOW_RUN_ID")
    run_name = "eval-" + time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    with mlflow.start_run(run_id=launched, experiment_id=None if launched else experiment_id,
                          run_name=None if launched else run_name) as run:
        mlflow.set_tags({"kind": "evaluation", "model_uri": model_uri,
                         "production_version": production[0].version if production else "none",
                         "gate": "passed" if decision.passed else "failed",
                         "gate_reasons": "; ".join(decision.reasons)[:4900]})
        mlflow.log_params({"source": source, "rows": len(rows)})
        mlflow.log_metrics({f"{group}_{k}": v for group, values in metrics.items() for k, v in values.items()})
    return {
        "run_id": run.info.run_id, "rows": len(rows), "data": where,
        "production_version": production[0].version if production else None,
        "metrics": metrics, "gate": {"passed": decision.passed, "reasons": decision.reasons},
    }
