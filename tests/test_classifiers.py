"""`ens`: LR + LinearSVC averaged into one linear model — the average, the lean path, calibration and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import DATASETS

from intelrouter.classifiers import AveragedLinear, make_classifier
from intelrouter.errors import IntelRouterError
from intelrouter.features import TextFeatures
from intelrouter.model import Router, make_pipeline
from intelrouter.names import CLASSIFIERS
from intelrouter.train import TrainOptions, fit_router, make_features


@pytest.fixture(scope="module")
def clinc() -> dict[str, pd.DataFrame]:
    """30 CLINC150 intents (train, val in-scope + OOS, test): real vocabulary, fitted in about a second."""
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    keep = sorted(frame.loc[frame["label"] != "oos", "label"].unique())[:30]
    frame = frame[frame["label"].isin(keep) | (frame["label"] == "oos")]
    parts = {s: frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    parts["train"] = parts["train"][parts["train"]["label"] != "oos"].reset_index(drop=True)
    return parts


@pytest.fixture(scope="module")
def fitted(clinc: dict[str, pd.DataFrame]) -> dict:
    """Features and an ensemble that keeps its members, fitted on train and calibrated on in-scope val."""
    features = TextFeatures()
    x = features.fit_transform(clinc["train"]["text"].tolist())
    val = clinc["val"][clinc["val"]["label"] != "oos"]
    xv = features.transform(val["text"].tolist())
    ens = AveragedLinear(C=10, random_state=0, keep_members=True).fit(x, clinc["train"]["label"].to_numpy())
    raw_proba = ens.predict_proba(xv)
    raw_coef = ens.coef_.copy()
    ens.calibrate(xv, val["label"].tolist())
    return {"features": features, "x": x, "xv": xv, "yv": val["label"].to_numpy(dtype=object), "ens": ens,
            "raw_proba": raw_proba, "raw_coef": raw_coef}


def test_registered_as_a_classifier() -> None:
    assert "ens" in CLASSIFIERS
    clf = make_classifier("ens", C=4.0, random_state=7)
    assert isinstance(clf, AveragedLinear) and (clf.C, clf.random_state, clf.weight) == (4.0, 7, 0.5)


def test_before_calibrate_equal_weights_and_unit_temperature(fitted: dict) -> None:
    ens = fitted["ens"]
    lr, svc = ens.members_
    np.testing.assert_allclose(fitted["raw_coef"], 0.5 * lr.coef_ + 0.5 * svc.coef_, rtol=1e-5, atol=1e-6)
    proba = fitted["raw_proba"]
    assert proba.shape == (len(fitted["yv"]), len(ens.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_combined_coefficients_are_the_weighted_average_of_calibrated_members(fitted: dict) -> None:
    ens = fitted["ens"]
    lr, svc = ens.members_
    t_lr, t_svc = ens.member_temperatures_
    assert t_lr != 1.0 and t_svc != 1.0 and ens.weight_ == 0.5
    w = ens.weight_
    np.testing.assert_allclose(ens.coef_, w * lr.coef_ / t_lr + (1 - w) * svc.coef_ / t_svc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ens.intercept_, w * lr.intercept_ / t_lr + (1 - w) * svc.intercept_ / t_svc,
                               rtol=1e-6)  # LR's own intercept is float32 (fitted on float32 features)
    assert ens.coef_.dtype == np.float32 and ens.coef_.shape == lr.coef_.shape
    # and it is one linear model: its scores are x @ coef.T + intercept
    xv = fitted["xv"]
    np.testing.assert_allclose(ens.decision_function(xv), (xv @ ens.coef_.T) + ens.intercept_, rtol=1e-5, atol=1e-5)

    other = AveragedLinear(C=10, random_state=0, weight=0.2, keep_members=True).fit(fitted["x"], lr.classes_[
        np.argmax(fitted["x"] @ ens.coef_.T + ens.intercept_, axis=1)])  # any labels: only the algebra is checked
    other.calibrate(xv, list(fitted["yv"]))
    (a, b), w = other.member_temperatures_, 0.2
    np.testing.assert_allclose(other.coef_, w * other.members_[0].coef_ / a + (1 - w) * other.members_[1].coef_ / b,
                               rtol=1e-5, atol=1e-6)


def test_threads_and_sequential_fit_the_same_model(fitted: dict, clinc: dict[str, pd.DataFrame]) -> None:
    y = clinc["train"]["label"].to_numpy()
    seq = AveragedLinear(C=10, random_state=0, n_jobs=1).fit(fitted["x"], y)
    par = AveragedLinear(C=10, random_state=0, n_jobs=2).fit(fitted["x"], y)
    np.testing.assert_array_equal(seq.coef_, par.coef_)
    assert set(par.member_fit_s_) == {"lr", "lr_cpu", "svc", "svc_cpu"}


def test_temperature_changes_confidences_not_the_argmax(fitted: dict) -> None:
    ens = fitted["ens"]
    assert ens.temperature_ != 1.0
    calibrated = ens.predict_proba(fitted["xv"])
    scores = ens.decision_function(fitted["xv"])
    untempered = np.exp(scores - scores.max(axis=1, keepdims=True))
    untempered /= untempered.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), untempered.argmax(axis=1))
    assert np.abs(calibrated.max(axis=1) - untempered.max(axis=1)).max() > 1e-3
    assert (ens.predict(fitted["xv"]) == fitted["yv"]).mean() > 0.85


def test_calibration_uses_only_the_rows_given(fitted: dict, clinc: dict[str, pd.DataFrame]) -> None:
    # the same held-out rows give the same temperatures; other rows give other ones
    y = clinc["train"]["label"].to_numpy()
    again = AveragedLinear(C=10, random_state=0, keep_members=True).fit(fitted["x"], y)
    again.calibrate(fitted["xv"], list(fitted["yv"]))
    assert again.temperature_ == fitted["ens"].temperature_
    assert again.member_temperatures_ == fitted["ens"].member_temperatures_
    half = slice(0, len(fitted["yv"]) // 2)
    other = AveragedLinear(C=10, random_state=0).fit(fitted["x"], y)
    other.calibrate(fitted["xv"][half], list(fitted["yv"][half]))
    assert other.temperature_ != again.temperature_


def test_router_on_an_ens_pipeline_predict_one_equals_predict(clinc: dict[str, pd.DataFrame], settings) -> None:  # noqa: ANN001
    options = TrainOptions(classifier="ens")
    router, timings = fit_router(clinc["train"], clinc["val"], make_features(settings, options), options, settings)
    clf = router.pipeline.steps[-1][1]
    assert isinstance(clf, AveragedLinear) and clf.members_ == ()  # dropped: only the averaged model is kept
    assert router.info["classifier"] == "ens" and router.info["temperature"] == clf.temperature_ != 1.0
    texts = clinc["test"]["text"].tolist()[:300]
    batch = router.predict(texts)
    assert [router.predict_one(t) for t in texts] == batch
    # the lean path is the classifier's own probabilities
    np.testing.assert_allclose(router.predict_proba(texts[:50]),
                               router.pipeline.predict_proba(texts[:50]), rtol=1e-5, atol=1e-6)
    test_in = clinc["test"][clinc["test"]["label"] != "oos"]
    assert np.mean([p.top_label == y for p, y in zip(router.predict(test_in["text"].tolist()), test_in["label"],
                                                     strict=True)]) > 0.85
    with pytest.raises(IntelRouterError, match="members were dropped"):
        clf.calibrate(router.features.transform(texts[:5]), clinc["test"]["label"].tolist()[:5])


def test_pickle_round_trip_predicts_identically(clinc: dict[str, pd.DataFrame], tmp_path) -> None:  # noqa: ANN001
    train, val = clinc["train"], clinc["val"][clinc["val"]["label"] != "oos"]
    pipe = make_pipeline(TextFeatures(), make_classifier("ens", C=10, random_state=0))
    pipe.fit(train["text"].tolist(), train["label"].to_numpy())
    pipe.steps[-1][1].calibrate(pipe.steps[0][1].transform(val["text"].tolist()), val["label"].tolist())
    router = Router(pipe, 0.5)
    texts = clinc["test"]["text"].tolist()[:200]
    before = router.predict(texts)
    loaded = Router.load(router.save(tmp_path / "router.pkl"))
    assert loaded.predict(texts) == before and [loaded.predict_one(t) for t in texts] == before
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(pipe)).predict_proba(texts), pipe.predict_proba(texts))


def test_ens_benchmark_choices_ignore_the_test_rows(tmp_path, settings) -> None:  # noqa: ANN001
    from test_benchmark import _file

    from intelrouter import benchmark

    data = benchmark.load(str(_file(tmp_path)))
    first = benchmark.run(data, settings, TrainOptions(classifier="ens"), timing_texts=20)
    shuffled = data.test.assign(label=np.random.default_rng(0).permutation(data.test["label"].to_numpy()))
    second = benchmark.run(benchmark.BenchData(data.name, data.train, data.val, shuffled, data.protocol), settings,
                           TrainOptions(classifier="ens"), timing_texts=20)
    # member temperatures, weight, final temperature and thresholds come from train + validation only
    assert first.config["classifier"] == "ens" and first.temperature != 1.0
    assert [r["threshold"] for r in first.rows_by_policy] == [r["threshold"] for r in second.rows_by_policy]
    assert first.temperature == second.temperature and first.val_accuracy == second.val_accuracy
    assert first.accuracy > 0.9 and second.accuracy < 0.6
    assert {"member_lr_s", "member_svc_s"} <= set(first.timings) and "members fitted" in benchmark.to_markdown(first)
