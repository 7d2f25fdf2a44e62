"""The promotion gate: a pure decision on per-row results, with a seeded paired bootstrap for noise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class ScoredSlice:
    """One model's answers on one slice of test rows: true and predicted (top) labels, row-aligned."""

    y_true: Sequence[str]
    y_pred: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.y_true) != len(self.y_pred):
            raise ValueError("y_true and y_pred differ in length")


@dataclass(frozen=True)
class GateRules:
    """What a candidate must meet: minimum quality without a baseline, tolerance with one."""

    min_accuracy: float = 0.5
    min_macro_f1: float = 0.3
    tolerance: float = 0.01
    metrics: tuple[str, ...] = METRICS
    slices: tuple[str, ...] = ("test", "recent")
    min_rows: int = 1
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0


@dataclass
class GateResult:
    """The decision and one reason per metric and slice."""

    passed: bool
    reasons: list[str] = field(default_factory=list)


def _encode(*label_lists: Sequence[str]) -> tuple[list[np.ndarray], int]:
    index: dict[str, int] = {}
    out = []
    for labels in label_lists:
        out.append(np.array([index.setdefault(str(v), len(index)) for v in labels], dtype=np.int64))
    return out, len(index)


def _macro_f1(y: np.ndarray, p: np.ndarray, n_labels: int) -> float:
    # macro F1 over labels present in the truth or the predictions, as sklearn's f1_score(average="macro")
    tp = np.bincount(y[y == p], minlength=n_labels)
    true_n = np.bincount(y, minlength=n_labels)
    pred_n = np.bincount(p, minlength=n_labels)
    present = (true_n + pred_n) > 0
    denom = true_n + pred_n
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_labels), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def metric_value(name: str, y: np.ndarray, p: np.ndarray, n_labels: int) -> float:
    """A gate metric (accuracy or macro_f1) on encoded labels."""
    if name == "accuracy":
        return float(np.mean(y == p)) if len(y) else 0.0
    if name == "macro_f1":
        return _macro_f1(y, p, n_labels)
    raise ValueError(f"unknown gate metric {name!r}: use one of {', '.join(METRICS)}")


def paired_bootstrap(
    candidate: ScoredSlice, baseline: ScoredSlice, metric: str, n_boot: int = 1000, seed: int = 0
) -> tuple[float, np.ndarray]:
    """Observed candidate − baseline difference and its bootstrap distribution over resampled rows."""
    if list(map(str, candidate.y_true)) != list(map(str, baseline.y_true)):
        raise ValueError("candidate and baseline must be scored on the same rows")
    (y, pc, pb), n_labels = _encode(candidate.y_true, candidate.y_pred, baseline.y_pred)
    observed = metric_value(metric, y, pc, n_labels) - metric_value(metric, y, pb, n_labels)
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs[b] = metric_value(metric, y[idx], pc[idx], n_labels) - metric_value(metric, y[idx], pb[idx], n_labels)
    return observed, diffs


def gate(
    candidate: Mapping[str, ScoredSlice], baseline: Mapping[str, ScoredSlice] | None, rules: GateRules
) -> GateResult:
    """Pass unless a slice regresses beyond noise and tolerance (with a baseline) or misses the minimums."""
    reasons: list[str] = []
    passed = True
    minimum = {"accuracy": rules.min_accuracy, "macro_f1": rules.min_macro_f1}
    for name in rules.slices:
        cand = candidate.get(name)
        if cand is None or len(cand.y_true) < rules.min_rows:
            n = 0 if cand is None else len(cand.y_true)
            if name == rules.slices[0]:
                passed = False
                reasons.append(f"{name}: {n} rows, need at least {rules.min_rows} to judge")
            else:
                reasons.append(f"{name}: {n} rows, not judged")
            continue
        base = None if baseline is None else baseline.get(name)
        for metric in rules.metrics:
            if base is None:
                (y, p), n_labels = _encode(cand.y_true, cand.y_pred)
                value = metric_value(metric, y, p, n_labels)
                ok = value >= minimum[metric]
                passed &= ok
                reasons.append(f"{name} {metric} {value:.4f} {'>=' if ok else '<'} minimum {minimum[metric]:.4f}")
                continue
            observed, diffs = paired_bootstrap(cand, base, metric, rules.n_boot, rules.seed)
            upper = float(np.quantile(diffs, 1 - rules.alpha))
            beyond_noise = upper < 0
            beyond_tolerance = observed < -rules.tolerance
            regression = beyond_noise and beyond_tolerance
            passed &= not regression
            verdict = (
                "regression" if regression
                else "drop within noise" if beyond_tolerance
                else "drop within tolerance" if observed < 0 else "no drop"
            )
            reasons.append(
                f"{name} {metric} {observed:+.4f} vs production ({verdict}; "
                f"{int((1 - rules.alpha) * 100)}% upper bound {upper:+.4f}, tolerance {rules.tolerance:.4f})"
            )
    return GateResult(passed=bool(passed), reasons=reasons)
