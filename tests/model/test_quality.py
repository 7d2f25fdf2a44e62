"""Quality on real data: a router fitted on CLINC150 intents answers them as well as it should.

Behavioural checks of trained models stand apart from the unit tests: they take real datasets and a fit, and
they fail when a change makes the model worse, not only when it breaks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATASETS
from training_support import on_shared_tracking, shared_tracking_uri  # noqa: F401 - a fixture

from intelrouter.classifiers import make_classifier
from intelrouter.features import TextFeatures
from intelrouter.jobs import train
from intelrouter.model import Router, make_pipeline


@pytest.fixture(scope="module")
def clinc() -> pd.DataFrame:
    """40 CLINC150 intents: real vocabulary, small enough to fit in a second."""
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    keep = sorted(frame.loc[frame["label"] != "oos", "label"].unique())[:40]
    return frame[frame["label"].isin(keep)]


def test_in_scope_accuracy_on_real_intents(clinc: pd.DataFrame) -> None:
    train, test = clinc[clinc["split"] == "train"], clinc[clinc["split"] == "test"]
    pipe = make_pipeline(TextFeatures(), make_classifier("lr", C=10, random_state=0))
    router = Router(pipe.fit(train["text"].tolist(), train["label"].to_numpy()), 0.5)
    preds = router.predict(test["text"].tolist())
    assert np.mean([p.top_label == y for p, y in zip(preds, test["label"], strict=True)]) > 0.9


@pytest.fixture
def settings(settings, shared_tracking_uri: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201, F811
    """A fresh database, and a model and experiment of its own on one shared tracking store."""
    return on_shared_tracking(monkeypatch, shared_tracking_uri)


def test_clinc150_in_scope_accuracy(settings) -> None:  # noqa: ANN001
    """CLINC150 (Larson et al. 2019) imported with its splits: in-scope train, OOS only for the threshold."""
    from intelrouter.labels import import_labels

    import_labels(settings, DATASETS / "clinc150" / "clinc150_full.csv", split_col="split")
    result = train(settings, threshold_policy="balanced")
    m = result.metrics
    # 4 500 in-scope test rows in the paper; one of them is a copy of another question (punctuation apart) and
    # counts once: training and the gate never see the same question twice
    assert m["test_inscope_rows"] == 4499 and m["test_oos_rows"] == 1000
    assert m["test_accuracy"] >= 0.92
    assert m["test_oos_recall"] >= 0.5
    assert result.lifecycle == "production"
