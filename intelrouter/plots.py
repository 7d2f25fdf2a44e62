"""The run's pictures and tables: confusion matrix, risk–coverage curve, reliability diagram, misclassified rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from intelrouter.evaluate import Scored, expected_calibration_error
from intelrouter.names import UNCERTAIN


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
    predicted = np.where(conf >= threshold, top, UNCERTAIN)
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
