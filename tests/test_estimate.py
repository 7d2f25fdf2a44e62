"""Estimated accuracy (mean top confidence) against labelled accuracy; the divergence alert and the early stop."""

from __future__ import annotations

import numpy as np
import pytest
import shadow_support as support

from intelrouter.estimate import Divergence, calibration_gap, early_stop, estimated_accuracy
from intelrouter.model import Router


def estimate_and_accuracy(router: Router) -> tuple[float, float, int]:
    """Estimated and labelled accuracy of the router's top labels on the held-out in-scope test rows."""
    test = support.inscope("test")
    proba = router.predict_proba(test["text"].tolist())
    top = np.asarray(router.labels, dtype=object)[proba.argmax(axis=1)]
    return estimated_accuracy(proba), float(np.mean(top == test["label"].to_numpy(dtype=object))), len(test)


@pytest.mark.parametrize("which", ["production", "small"])
def test_the_estimate_of_a_calibrated_model_is_its_labelled_accuracy(which: str) -> None:
    # production: 80 % of the training rows (~97 % accurate); small: 15 rows per intent (~87 %)
    router = support.production() if which == "production" else support.small()
    estimated, labelled, n = estimate_and_accuracy(router)
    assert abs(estimated - labelled) <= 0.02, (estimated, labelled)
    assert calibration_gap(estimated, labelled, n, bound=0.05) is None


def test_a_miscalibrated_router_diverges_from_its_labels() -> None:
    calibrated = support.small()
    over = support.miscalibrated(calibrated, 5.0)  # temperature / 5: the same answers, over-confident
    estimated, labelled, n = estimate_and_accuracy(over)
    assert labelled == estimate_and_accuracy(calibrated)[1]
    divergence = calibration_gap(estimated, labelled, n, bound=0.05)
    assert isinstance(divergence, Divergence)
    assert divergence.gap == pytest.approx(estimated - labelled) and divergence.gap > 0.05
    assert "over-confident" in divergence.message and f"on {n} labels" in divergence.message
    under = support.miscalibrated(support.production(), 0.2)  # temperature x 5: under-confident
    divergence = calibration_gap(*estimate_and_accuracy(under), bound=0.05)
    assert divergence is not None and divergence.gap < -0.05 and "under-confident" in divergence.message


def test_a_handful_of_labels_does_not_alert() -> None:
    # 15 points apart: on 5 labels that is within the binomial noise (1.96 x 9.7 points), on 400 it is not
    assert calibration_gap(0.95, 0.80, 5, bound=0.05) is None
    assert calibration_gap(0.95, 0.80, 0, bound=0.05) is None
    found = calibration_gap(0.95, 0.80, 400, bound=0.05)
    assert found is not None and found.noise == pytest.approx(1.96 * np.sqrt(0.95 * 0.05 / 400))
    assert calibration_gap(0.95, 0.92, 100_000, bound=0.05) is None  # beyond noise but within the bound
    assert found.as_dict()["message"] == found.message


def test_estimated_accuracy_takes_top_confidences_or_probability_rows() -> None:
    assert estimated_accuracy([0.9, 0.7]) == pytest.approx(0.8)
    assert estimated_accuracy(np.array([[0.1, 0.9], [0.7, 0.3]])) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no confidences"):
        estimated_accuracy([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimated_accuracy([0.5, 1.5])


def test_early_stop_only_for_a_canary_clearly_worse() -> None:
    reason = early_stop(0.80, 0.90, 2000, 20_000, margin=0.05)
    assert reason is not None and "worse by 10.0 points, more than 5.0" in reason
    assert early_stop(0.80, 0.90, 20, 200, margin=0.05) is None  # 10 points on 20 queries: within noise
    # 8 points worse, but the optimistic end of the interval (about 4 points worse) is within the margin
    assert early_stop(0.82, 0.90, 250, 20_000, margin=0.05) is None
    assert early_stop(0.82, 0.90, 2500, 20_000, margin=0.05) is not None
    assert early_stop(0.87, 0.90, 20_000, 200_000, margin=0.05) is None  # certain, but within the margin
    assert early_stop(0.95, 0.90, 2000, 20_000, margin=0.05) is None  # better
    assert early_stop(0.10, 0.90, 0, 20_000, margin=0.05) is None  # nothing served yet
