"""Accuracy without labels: the mean top confidence of a calibrated model, and the decisions built on it.

Confidence-based performance estimation: when confidences are calibrated (a softmax temperature fitted on
held-out rows, `intelrouter.model`), a row answered with confidence c is right with probability c, so the
expected accuracy of the top labels over any set of rows is the mean of their top confidences. It needs no
labels, so it is there on day one of a canary; it is only as good as the calibration, which
`calibration_gap` watches against the human labels as they arrive.

Pure functions on numbers: whoever calls them reads the store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Two-sided 95 %: a divergence alert needs the gap to be outside what the labels' sampling noise explains.
DIVERGENCE_Z = 1.96
# One-sided 95 %, as `intelrouter.canary.CONFIDENCE_Z`: stopping a canary early needs the same certainty as
# rolling it back on labels.
EARLY_STOP_Z = 1.645


def estimated_accuracy(confidences: Sequence[float] | np.ndarray) -> float:
    """Expected accuracy of the top labels: the mean top confidence (rows of probabilities: their maxima)."""
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.ndim == 2:
        conf = conf.max(axis=1) if conf.shape[1] else np.zeros(0)
    if conf.size == 0:
        raise ValueError("no confidences: the estimate needs at least one row")
    if conf.ndim != 1 or np.any((conf < 0) | (conf > 1)) or np.isnan(conf).any():
        raise ValueError("confidences must be probabilities in [0, 1], one per row")
    return float(conf.mean())


def binomial_se(p: float, n: int) -> float:
    """Standard error of a share p measured on n rows (0 without rows)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else 0.0


@dataclass(frozen=True)
class Divergence:
    """Estimated and labelled accuracy disagree beyond the bound and beyond noise: calibration has drifted."""

    estimated: float
    labelled: float
    n_labelled: int
    gap: float  # estimated - labelled: positive when the model is over-confident
    noise: float  # DIVERGENCE_Z binomial standard errors of the labelled accuracy
    bound: float

    @property
    def message(self) -> str:
        """One line for an alert."""
        side = "over-confident" if self.gap > 0 else "under-confident"
        return (f"estimated accuracy {self.estimated:.1%} vs labelled {self.labelled:.1%} on {self.n_labelled} "
                f"labels: {abs(self.gap) * 100:.1f} points apart (bound {self.bound * 100:.1f}, noise "
                f"{self.noise * 100:.1f}); the model is {side}, its calibration has drifted")

    def as_dict(self) -> dict[str, Any]:
        """Plain data, with the message."""
        return {**asdict(self), "message": self.message}


def calibration_gap(
    estimated: float, labelled: float, n_labelled: int, bound: float, z: float = DIVERGENCE_Z
) -> Divergence | None:
    """A Divergence when |estimated - labelled| exceeds both `bound` and z binomial errors of the labels, else None.

    Compare like with like: `estimated` should be the mean confidence of the same queries the `n_labelled`
    labels judge (review picks low-confidence queries first, so the labelled ones are not a random sample).
    The error is the binomial one of `n_labelled` rows at the estimated accuracy (what calibration predicts),
    so a handful of labels never alerts.
    """
    if n_labelled <= 0:
        return None
    gap = estimated - labelled
    noise = z * binomial_se(estimated, n_labelled)
    if abs(gap) > bound and abs(gap) > noise:
        return Divergence(estimated, labelled, n_labelled, gap, noise, bound)
    return None


def early_stop(
    staging_estimate: float, production_estimate: float, n_staging: int, n_production: int, margin: float,
    z: float = EARLY_STOP_Z,
) -> str | None:
    """A reason to stop the canary now when its estimated accuracy is worse by more than `margin`, beyond noise.

    Both estimates are mean top confidences over the queries each variant answered in the same period. The
    noise is z standard errors of the difference, each side bounded by the binomial m(1 - m)/n (a variable in
    [0, 1] with mean m has at most that variance): the canary is stopped only when even the optimistic end
    of the one-sided interval is worse than `margin` — the rule `intelrouter.canary.decide` applies to
    labelled accuracy. None: no reason (promotion still needs labels).
    """
    if n_staging <= 0 or n_production <= 0:
        return None
    diff = staging_estimate - production_estimate
    noise = z * math.hypot(binomial_se(staging_estimate, n_staging), binomial_se(production_estimate, n_production))
    if diff + noise < -margin:
        return (f"estimated accuracy of the canary {staging_estimate:.1%} on {n_staging} queries vs production "
                f"{production_estimate:.1%} on {n_production}: worse by {-diff * 100:.1f} points, more than "
                f"{margin * 100:.1f} even allowing {noise * 100:.1f} points of noise")
    return None
