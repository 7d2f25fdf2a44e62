"""Real routers for the shadow, estimate and drift tests: 30 CLINC150 intents, fitted once per test process."""

from __future__ import annotations

import copy
from functools import cache

import numpy as np
import pandas as pd
from conftest import DATASETS

from intelrouter.config import load_settings
from intelrouter.model import Router
from intelrouter.train import TrainOptions, fit_router, make_features

INTENTS = 30


@cache
def clinc() -> dict[str, pd.DataFrame]:
    """Train (in-scope), val (in-scope + OOS) and test (in-scope + OOS) rows of the first 30 intents."""
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    keep = sorted(frame.loc[frame["label"] != "oos", "label"].unique())[:INTENTS]
    frame = frame[frame["label"].isin(keep) | (frame["label"] == "oos")]
    parts = {s: frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    parts["train"] = parts["train"][parts["train"]["label"] != "oos"].reset_index(drop=True)
    return parts


def inscope(split: str) -> pd.DataFrame:
    """The in-scope rows of a split."""
    part = clinc()[split]
    return part[part["label"] != "oos"].reset_index(drop=True)


def _fit(train: pd.DataFrame) -> Router:
    # explicit settings: the developer's INTELROUTER_* environment must not change what is fitted
    settings = load_settings(classifier="lr", threshold_policy="fixed", uncertain_threshold=0.6, static_features="",
                             ambiguity_margin=0.0, random_state=42)
    options = TrainOptions()
    router, _ = fit_router(train, clinc()["val"], make_features(settings, options), options, settings)
    return router


@cache
def production() -> Router:
    """@production: fitted on 80 % of the training rows, calibrated on val."""
    return _fit(clinc()["train"].sample(frac=0.8, random_state=1))


@cache
def retrained() -> Router:
    """An ordinary retrain: every training row (25 % more data than production)."""
    return _fit(clinc()["train"])


@cache
def shuffled(share: float = 0.4) -> Router:
    """A broken candidate: `share` of the training rows have their labels shuffled among themselves."""
    train = clinc()["train"].copy()
    rng = np.random.default_rng(0)
    rows = rng.random(len(train)) < share
    train.loc[rows, "label"] = rng.permutation(train.loc[rows, "label"].to_numpy())
    return _fit(train)


def miscalibrated(router: Router, factor: float = 5.0) -> Router:
    """A copy whose softmax temperature is divided by `factor`: the same argmax, over-confident."""
    other = copy.deepcopy(router)
    other.pipeline.steps[-1][1].temperature_ /= factor
    other.refresh()
    return other


@cache
def small() -> Router:
    """A less accurate router (15 training rows per intent), calibrated on the same val rows."""
    return _fit(clinc()["train"].groupby("label").head(15))
