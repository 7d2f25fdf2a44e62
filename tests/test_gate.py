"""The promotion gate as a pure function: minimum quality, tolerance, and the paired bootstrap."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sklearn.metrics import f1_score

from intelrouter.gate import GateRules, ScoredSlice, gate, metric_value, paired_bootstrap

LABELS = ["a", "b", "c", "d"]


def _slice(n: int, wrong: set[int], seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    truth = [rng.choice(LABELS) for _ in range(n)]
    pred = [LABELS[(LABELS.index(t) + 1) % 4] if i in wrong else t for i, t in enumerate(truth)]
    return truth, pred


def _pair(n: int, cand_wrong: set[int], base_wrong: set[int]) -> tuple[ScoredSlice, ScoredSlice]:
    truth, cand = _slice(n, cand_wrong)
    _, base = _slice(n, base_wrong)
    return ScoredSlice(truth, cand), ScoredSlice(truth, base)


def test_first_model_passes_when_it_meets_the_minimums() -> None:
    truth, pred = _slice(200, set(range(20)))  # 90 % accurate
    result = gate({"test": ScoredSlice(truth, pred), "recent": ScoredSlice(truth, pred)}, None, GateRules())
    assert result.passed
    assert any("test accuracy 0.9000 >= minimum" in r for r in result.reasons)


def test_first_model_below_minimum_accuracy_is_rejected() -> None:
    truth, pred = _slice(200, set(range(120)))  # 40 % accurate
    result = gate({"test": ScoredSlice(truth, pred)}, None, GateRules(min_accuracy=0.5))
    assert not result.passed
    assert any("test accuracy 0.4000 < minimum 0.5000" in r for r in result.reasons)


def test_clear_regression_beyond_noise_and_tolerance_fails() -> None:
    cand, base = _pair(1000, set(range(200)), set(range(50)))  # 80 % vs 95 %
    result = gate({"test": cand, "recent": cand}, {"test": base, "recent": base}, GateRules())
    assert not result.passed
    assert any(r.startswith("test accuracy -0.1500") and "regression" in r for r in result.reasons)


def test_small_drop_within_noise_passes() -> None:
    # 3 more errors on 100 rows, on different rows: beyond the 1 % tolerance but inside bootstrap noise
    cand, base = _pair(100, set(range(8)), set(range(10, 15)))
    result = gate({"test": cand}, {"test": base}, GateRules(slices=("test",)))
    assert result.passed
    assert "drop within noise" in result.reasons[0]


def test_drop_beyond_noise_but_within_tolerance_passes() -> None:
    # 0.4 % worse on 20 000 rows: real (the bootstrap sees it) but inside a 1 % tolerance
    cand, base = _pair(20000, set(range(80)), set())
    rules = GateRules(slices=("test",), metrics=("accuracy",), n_boot=300)
    result = gate({"test": cand}, {"test": base}, rules)
    assert result.passed
    assert "drop within tolerance" in result.reasons[0]
    strict = gate({"test": cand}, {"test": base}, GateRules(slices=("test",), metrics=("accuracy",), n_boot=300,
                                                            tolerance=0.001))
    assert not strict.passed


def test_regression_on_the_recent_slice_alone_fails() -> None:
    good_c, good_b = _pair(1000, set(range(50)), set(range(50)))
    bad_c, bad_b = _pair(500, set(range(150)), set(range(10)))
    result = gate({"test": good_c, "recent": bad_c}, {"test": good_b, "recent": bad_b}, GateRules())
    assert not result.passed
    assert any(r.startswith("recent accuracy") and "regression" in r for r in result.reasons)
    assert any(r.startswith("test accuracy") and "no drop" in r for r in result.reasons)


def test_empty_recent_slice_is_not_judged() -> None:
    cand, base = _pair(300, set(range(10)), set(range(10)))
    empty = ScoredSlice([], [])
    result = gate({"test": cand, "recent": empty}, {"test": base, "recent": empty}, GateRules())
    assert result.passed
    assert "recent: 0 rows, not judged" in result.reasons


def test_empty_test_slice_cannot_pass() -> None:
    result = gate({"test": ScoredSlice([], [])}, None, GateRules())
    assert not result.passed


def test_bootstrap_is_seeded_and_paired() -> None:
    cand, base = _pair(400, set(range(30)), set(range(20)))
    obs1, d1 = paired_bootstrap(cand, base, "accuracy", n_boot=200, seed=7)
    obs2, d2 = paired_bootstrap(cand, base, "accuracy", n_boot=200, seed=7)
    assert obs1 == pytest.approx(-0.025) and np.array_equal(d1, d2)
    # paired: identical predictions give a zero difference in every resample
    _, same = paired_bootstrap(cand, cand, "macro_f1", n_boot=50)
    assert np.all(same == 0)


def test_candidate_and_baseline_must_share_rows() -> None:
    truth, pred = _slice(50, set())
    other = ScoredSlice(list(reversed(truth)), pred)
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap(ScoredSlice(truth, pred), other, "accuracy")


def test_macro_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 500)
    p = np.where(rng.random(500) < 0.7, y, rng.integers(0, 7, 500))
    ours = metric_value("macro_f1", y, p, 7)
    assert ours == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
