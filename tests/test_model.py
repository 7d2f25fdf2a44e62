"""The Router: predictions with UNCERTAIN, the lean one-text path, the pyfunc form, and bad artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATASETS
from test_features import ODD
from training_support import cli_env, synthetic_rows

from intelrouter.classifiers import TemperatureScaled, make_classifier
from intelrouter.errors import IntelRouterError, NotFoundError, RegistryError
from intelrouter.features import TextFeatures
from intelrouter.model import Prediction, Router, make_pipeline
from intelrouter.names import UNCERTAIN
from intelrouter.tracking import PYFUNC_CODE


@pytest.fixture(scope="module")
def clinc() -> pd.DataFrame:
    """40 CLINC150 intents: real vocabulary, small enough to fit in a second."""
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    keep = sorted(frame.loc[frame["label"] != "oos", "label"].unique())[:40]
    return frame[frame["label"].isin(keep) | (frame["label"] == "oos")]


def _router(frame: pd.DataFrame, classifier: str = "lr", threshold: float = 0.5, **features: object) -> Router:
    train = frame[(frame["split"] == "train") & (frame["label"] != "oos")]
    pipe = make_pipeline(TextFeatures(**features), make_classifier(classifier, C=10, random_state=0))
    pipe.fit(train["text"].tolist(), train["label"].to_numpy())
    return Router(pipe, threshold)


@pytest.fixture(scope="module")
def router(clinc: pd.DataFrame) -> Router:
    return _router(clinc)


def _assert_lean_matches(router: Router, texts: list[str]) -> None:
    # the lean arithmetic is the sklearn pipeline's up to float32 rounding ...
    sklearn = np.asarray(router.pipeline.predict_proba(texts), dtype=np.float64)
    batch = router.predict_proba(texts)
    np.testing.assert_allclose(batch, sklearn, rtol=1e-5, atol=1e-7)
    # ... and the batch and one-text paths are the same floats, so `uncertain` can never differ between them
    assert np.array_equal(np.array([router.proba_one(t) for t in texts]), batch)
    one, many = [router.predict_one(t) for t in texts], router.predict(texts)
    assert [p.as_dict() for p in one] == [p.as_dict() for p in many]


def test_lean_path_equals_the_sklearn_pipeline(router: Router, clinc: pd.DataFrame) -> None:
    texts = clinc.loc[clinc["split"] == "test", "text"].tolist()[:1500] + ODD
    _assert_lean_matches(router, texts)


@pytest.mark.parametrize("classifier", ["sgd", "svc"])
def test_lean_path_equals_sklearn_for_every_classifier(clinc: pd.DataFrame, classifier: str) -> None:
    router = _router(clinc, classifier, stems=False)
    clf = router.pipeline.steps[-1][1]
    if isinstance(clf, TemperatureScaled):
        val = clinc[(clinc["split"] == "val") & (clinc["label"] != "oos")]
        temperature = clf.calibrate(router.features.transform(val["text"].tolist()), val["label"].tolist())
        assert temperature != 1.0
    _assert_lean_matches(router, clinc.loc[clinc["split"] == "test", "text"].tolist()[:300] + ODD)


def test_lean_path_with_two_classes() -> None:
    rows = [r for r in synthetic_rows(30, seed=2) if r["label"] in ("weather", "book_flight")]
    pipe = make_pipeline(TextFeatures(), make_classifier("lr"))
    pipe.fit([r["text"] for r in rows], [r["label"] for r in rows])
    router = Router(pipe, 0.6)
    assert router.labels == ["book_flight", "weather"]
    _assert_lean_matches(router, [r["text"] for r in rows] + ODD)


def test_predict_one_is_predict_even_at_the_threshold(router: Router, clinc: pd.DataFrame) -> None:
    texts = clinc.loc[clinc["split"] == "val", "text"].tolist()[:400] + ODD
    confidences = router.predict_proba(texts).max(axis=1)
    for c in confidences[::40]:
        # thresholds exactly at a text's confidence and one float step either side of it
        for threshold in (c, np.nextafter(c, 0), np.nextafter(c, 1)):
            at = Router(router.pipeline, float(threshold))
            one, many = [at.predict_one(t) for t in texts], at.predict(texts)
            assert one == many
            assert [p.uncertain for p in many] == [bool(x < threshold) for x in confidences]


def test_ambiguity_margin_makes_close_calls_uncertain(router: Router, clinc: pd.DataFrame) -> None:
    texts = clinc.loc[clinc["split"] == "val", "text"].tolist()[:300]
    proba = router.predict_proba(texts)
    top2 = np.sort(proba, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    with_margin = Router(router.pipeline, threshold=0.0, margin=0.2)
    preds = with_margin.predict(texts)
    assert [p.uncertain for p in preds] == list(gap < 0.2) and 0 < sum(gap < 0.2) < len(texts)
    assert [with_margin.predict_one(t) for t in texts] == preds
    assert all(p.label == UNCERTAIN and p.top_label != UNCERTAIN for p in preds if p.uncertain)
    assert not any(p.uncertain for p in Router(router.pipeline, threshold=0.0).predict(texts))  # margin 0: off


def test_uncertain_below_threshold(router: Router) -> None:
    sure = router.predict_one("what is my bank balance")
    assert sure == Prediction(sure.top_label, sure.confidence, sure.top_label, False)
    router_high = Router(router.pipeline, threshold=1.0)
    unsure = router_high.predict_one("what is my bank balance")
    assert unsure.uncertain and unsure.label == UNCERTAIN and unsure.top_label == sure.top_label
    assert unsure.confidence == pytest.approx(sure.confidence)


def test_predict_accepts_dataframes_and_missing_values(router: Router) -> None:
    frame = pd.DataFrame({"text": ["book a table for two", None, float("nan")]})
    proba = router.predict_proba(frame)
    assert proba.shape == (3, len(router.labels))
    assert np.array_equal(proba[1], router.proba_one(""))
    np.testing.assert_allclose(proba[2], proba[1])
    assert router.predict([]) == []


def test_save_and_load_round_trip(router: Router, tmp_path: Path) -> None:
    router.info["semver"] = "1.0.0"
    loaded = Router.load(router.save(tmp_path / "router.pkl"))
    assert loaded.labels == router.labels and loaded.threshold == router.threshold
    assert loaded.info["semver"] == "1.0.0"
    assert loaded.predict_one("set an alarm") == router.predict_one("set an alarm")  # same lean path, same floats


def test_corrupt_or_foreign_files_fail_with_one_clear_error(router: Router, tmp_path: Path) -> None:
    good = router.save(tmp_path / "router.pkl").read_bytes()
    (tmp_path / "truncated.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(RegistryError, match="corrupt or unreadable"):
        Router.load(tmp_path / "truncated.pkl")
    (tmp_path / "foreign.pkl").write_bytes(__import__("pickle").dumps({"not": "a router"}))
    with pytest.raises(RegistryError, match="does not hold an IntelRouter model"):
        Router.load(tmp_path / "foreign.pkl")
    with pytest.raises(NotFoundError):
        Router.load(tmp_path / "missing.pkl")


def test_shipped_pipeline_ends_in_logistic_regression_and_others_are_named() -> None:
    from sklearn.linear_model import LogisticRegression

    assert isinstance(make_pipeline().steps[-1][1], LogisticRegression)
    assert isinstance(make_classifier("svc"), TemperatureScaled)
    with pytest.raises(IntelRouterError, match="unknown classifier 'forest'"):
        make_classifier("forest")


def test_pyfunc_loads_and_predicts_in_a_fresh_process(router: Router, tmp_path: Path) -> None:
    import mlflow

    from intelrouter.tracking import model_signature as _signature

    path = router.save(tmp_path / "router.pkl")
    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(str(model_dir), python_model=str(PYFUNC_CODE), artifacts={"router": str(path)},
                             signature=_signature(), input_example=pd.DataFrame({"text": ["hello"]}))
    texts = ["what is my balance", "", "tell me a joke"]
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "out = m.predict(pd.DataFrame({'text': json.loads(sys.argv[2])}))\n"
        "print(json.dumps({'columns': list(out.columns), 'rows': out.to_dict('records')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(model_dir), json.dumps(texts)], env=cli_env(),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["columns"] == ["label", "confidence", "top_label", "uncertain"]
    expected = router.predict(texts)
    assert out["rows"] == [p.as_dict() for p in expected]  # the lean path in both: the same floats


FIXTURE = Path(__file__).parent / "fixtures" / "model-before-recut"


def test_a_model_saved_by_the_previous_code_still_loads_and_predicts_the_same() -> None:
    # router.pkl was pickled before the classifiers moved from intelrouter.model to intelrouter.classifiers
    expected = json.loads((FIXTURE / "expected.json").read_text())
    router = Router.load(FIXTURE / "artifacts" / "router.pkl")
    assert type(router.pipeline.steps[-1][1]).__module__ == "intelrouter.classifiers"
    assert [router.predict_one(t).as_dict() for t in expected["texts"]] == expected["predictions"]
    assert router.threshold == expected["threshold"]
