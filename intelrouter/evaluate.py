"""Evaluation: scoring rows, slice metrics, the UNCERTAIN threshold policies, and a candidate against a baseline.

`compare` is the one place a candidate and `@production` are scored on the same rows and gated: training and
`intelrouter evaluate` both call it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from intelrouter.errors import InputError
from intelrouter.gate import GateResult, GateRules, ScoredSlice, gate
from intelrouter.names import POLICIES

if TYPE_CHECKING:
    from intelrouter.config import Settings
    from intelrouter.model import Router

SLICES = ("test", "recent")


@dataclass
class Scored:
    """A model's answers on some rows: truth, probabilities, and the model's label order."""

    y_true: list[str]
    proba: np.ndarray
    labels: list[str]

    @cached_property
    def top(self) -> np.ndarray:
        """The argmax label of each row (an object array)."""
        if len(self.y_true) == 0:
            return np.array([], dtype=object)
        return np.array(self.labels, dtype=object)[self.proba.argmax(axis=1)]

    @cached_property
    def confidence(self) -> np.ndarray:
        """The top probability of each row."""
        return self.proba.max(axis=1) if len(self.y_true) else np.zeros(0)

    @cached_property
    def correct(self) -> np.ndarray:
        """Whether the argmax label is the true one, per row."""
        return self.top == np.array(self.y_true, dtype=object)

    def subset(self, mask: np.ndarray) -> Scored:
        """Only the rows where mask is true."""
        return Scored([y for y, m in zip(self.y_true, mask, strict=True) if m], self.proba[mask], self.labels)


def score(router: Router, frame: pd.DataFrame) -> Scored:
    """The router's probabilities on some rows (a frame with `text` and `label`)."""
    texts = frame["text"].tolist()
    proba = router.predict_proba(texts) if texts else np.zeros((0, len(router.labels)))
    return Scored(frame["label"].tolist(), proba, router.labels)


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
        top, truth, correct = inscope.top, np.array(inscope.y_true, dtype=object), inscope.correct
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


def gate_slices(scored: Scored, recent: np.ndarray, oos_label: str) -> dict[str, ScoredSlice]:
    """The gate's view of a model: in-scope rows of the full test set and of the recent slice."""
    truth = np.array(scored.y_true, dtype=object)
    inscope = truth != oos_label
    return {
        "test": ScoredSlice(list(truth[inscope]), list(scored.top[inscope])),
        "recent": ScoredSlice(list(truth[inscope & recent]), list(scored.top[inscope & recent])),
    }


def gate_rules(settings: Settings) -> GateRules:
    """The gate's rules from the settings."""
    return GateRules(min_accuracy=settings.gate_min_accuracy, min_macro_f1=settings.gate_min_macro_f1,
                     tolerance=settings.gate_tolerance, seed=settings.random_state)


@dataclass
class Comparison:
    """A candidate and its baseline scored on the same rows: metrics per model and slice, and the gate's decision."""

    candidate: Scored
    baseline: Scored | None
    metrics: dict[str, dict[str, float]]  # "candidate_test", "candidate_recent", "baseline_test", ...
    decision: GateResult
    rows: int
    recent_rows: int = 0
    notes: list[str] = field(default_factory=list)


def compare(candidate: Router, baseline: Router | None, rows: pd.DataFrame, recent: np.ndarray,
            settings: Settings) -> Comparison:
    """Score the candidate and the baseline on the same rows (full and recent slice) and gate the candidate."""
    if len(recent) != len(rows):
        raise InputError("the recent-slice mask and the rows differ in length")
    models = {"candidate": candidate} | ({"baseline": baseline} if baseline is not None else {})
    scored = {name: score(router, rows) for name, router in models.items()}
    metrics: dict[str, dict[str, float]] = {}
    for name, router in models.items():
        for slice_name, mask in (("test", np.ones(len(rows), dtype=bool)), ("recent", recent)):
            metrics[f"{name}_{slice_name}"] = slice_metrics(scored[name].subset(mask), router.threshold,
                                                            settings.oos_label)
    slices = {name: gate_slices(s, recent, settings.oos_label) for name, s in scored.items()}
    rules = gate_rules(settings)
    decision = gate(slices["candidate"], slices.get("baseline"), rules)
    return Comparison(scored["candidate"], scored.get("baseline"), metrics, decision, len(rows), int(recent.sum()))
