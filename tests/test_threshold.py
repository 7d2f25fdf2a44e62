"""Threshold policies and calibration metrics as pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from intelrouter.errors import InputError
from intelrouter.evaluate import Scored, choose_threshold, expected_calibration_error, slice_metrics
from intelrouter.plots import risk_coverage


def test_fixed_policy_returns_the_configured_threshold() -> None:
    assert choose_threshold("fixed", np.array([0.9, 0.2]), np.array([1, 0]), fixed=0.6) == (0.6, "fixed")


def test_coverage_policy_answers_the_target_share() -> None:
    conf = np.linspace(0.01, 1.0, 100)
    threshold, used = choose_threshold("coverage", conf, np.ones(100), target_coverage=0.9)
    assert used == "coverage"
    assert np.mean(conf >= threshold) == pytest.approx(0.9)
    # the highest such threshold: one step up answers fewer than 90 %
    assert np.mean(conf > threshold) < 0.9


def test_balanced_policy_separates_in_scope_from_out_of_scope() -> None:
    conf_in = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.4])
    correct = np.array([1, 1, 1, 1, 1, 0], dtype=bool)
    conf_oos = np.array([0.3, 0.5, 0.55, 0.6])
    threshold, used = choose_threshold("balanced", conf_in, correct, conf_oos)
    assert used == "balanced"
    # any t in (0.6, 0.7] answers every correct in-scope row (5 of 6) and refuses every OOS row
    assert 0.6 < threshold <= 0.7
    in_acc = np.mean(correct & (conf_in >= threshold))
    oos_recall = np.mean(conf_oos < threshold)
    assert (in_acc + oos_recall) / 2 == pytest.approx((5 / 6 + 1) / 2)


def test_balanced_policy_maximises_the_mean_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    conf_in, conf_oos = rng.random(300), rng.random(80) * 0.7
    correct = rng.random(300) < conf_in
    threshold, _ = choose_threshold("balanced", conf_in, correct, conf_oos)

    def objective(t: float) -> float:
        return (np.mean(correct & (conf_in >= t)) + np.mean(conf_oos < t)) / 2

    best = max(objective(t) for t in np.concatenate([conf_in, conf_oos, np.linspace(0, 1, 501)]))
    assert objective(threshold) == pytest.approx(best)


def test_accuracy_policy_maximises_accuracy_with_oos_as_a_class_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    conf_in, conf_oos = rng.random(300), rng.random(20) * 0.8
    correct = rng.random(300) < conf_in
    threshold, used = choose_threshold("accuracy", conf_in, correct, conf_oos)

    def objective(t: float) -> float:
        return (np.sum(correct & (conf_in >= t)) + np.sum(conf_oos < t)) / 320

    best = max(objective(t) for t in np.concatenate([conf_in, conf_oos, np.linspace(0, 1, 501)]))
    assert used == "accuracy" and objective(threshold) == pytest.approx(best)
    # few OOS rows weigh little: the rule refuses fewer rows than the balanced mean does
    assert threshold < choose_threshold("balanced", conf_in, correct, conf_oos)[0]


def test_balanced_without_out_of_scope_rows_falls_back_to_fixed() -> None:
    assert choose_threshold("balanced", np.array([0.9]), np.array([1]), np.array([]), fixed=0.6) == (0.6, "fixed")


def test_unknown_policy_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown threshold policy 'strict'"):
        choose_threshold("strict", np.array([0.5]), np.array([1]))


def test_expected_calibration_error() -> None:
    conf = np.full(100, 0.8)
    assert expected_calibration_error(conf, np.arange(100) < 80) == pytest.approx(0.0)
    assert expected_calibration_error(conf, np.arange(100) < 50) == pytest.approx(0.3)


def test_risk_coverage_orders_by_confidence() -> None:
    coverage, risk = risk_coverage(np.array([0.9, 0.1, 0.5]), np.array([1, 0, 1]))
    assert list(coverage) == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert list(risk) == pytest.approx([0.0, 0.0, 1 / 3])


def test_slice_metrics_keep_out_of_scope_rows_out_of_accuracy() -> None:
    labels = ["a", "b"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.7, 0.3]])
    scored = Scored(["a", "a", "oos", "oos"], proba, labels)
    m = slice_metrics(scored, threshold=0.6, oos_label="oos")
    assert m["inscope_rows"] == 2 and m["accuracy"] == 0.5
    assert m["coverage"] == 1.0 and m["uncertain_rate"] == 0.0
    assert m["oos_recall"] == 0.5  # 0.55 is refused, 0.7 is answered
    assert m["f1_a"] == pytest.approx(2 / 3)
