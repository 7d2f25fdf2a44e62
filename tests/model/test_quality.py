"""Quality on real data: a router fitted on CLINC150 intents answers them as well as it should.

Behavioural checks of trained models stand apart from the unit tests: they take real datasets and a fit, and
they fail when a change makes the model worse, not only when it breaks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATASETS

from intelrouter.classifiers import make_classifier
from intelrouter.features import TextFeatures
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
