"""Fitting: text features and a classifier on the training rows, calibrated and thresholded on validation rows.

No MLflow and no store here: `intelrouter.jobs` wires this step into a tracked, registered training run, and the
benchmarks call it directly. Out-of-scope rows (the `oos_label` setting) are never a class: in the validation
rows they choose the threshold (policy `balanced` or `accuracy`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from intelrouter.classifiers import make_classifier
from intelrouter.config import Settings
from intelrouter.errors import InputError, InsufficientDataError
from intelrouter.evaluate import choose_threshold, score
from intelrouter.features import TextFeatures
from intelrouter.model import Router
from intelrouter.names import ClassifierName, ThresholdPolicy
from intelrouter.static_table import parse_variant


class TrainOptions(BaseModel):
    """One training job's knobs; unset ones come from the settings."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("db", description="`db` (ml_data) or the path of a JSONL export.")
    test_size: float | None = Field(None, gt=0, lt=1)
    random_state: int | None = None
    min_samples: int | None = Field(None, ge=1)
    C: float = Field(10.0, gt=0)
    threshold_policy: ThresholdPolicy | None = None
    classifier: ClassifierName | None = None
    features: dict[str, Any] = Field(default_factory=dict, description="TextFeatures parameters.")


def feature_params(settings: Settings, options: TrainOptions) -> dict[str, Any]:
    """The TextFeatures parameters of a job: the `static_features` setting, then the job's own; bad ones: InputError."""
    params = {"static": settings.static_features} if settings.static_features else {}
    params.update(options.features)
    try:
        TextFeatures(**params)
    except TypeError as exc:
        raise InputError(f"bad features {params}: {exc}") from None
    if params.get("static"):
        parse_variant(params["static"])
        weight = params.get("static_weight", 1.0)
        if not isinstance(weight, int | float) or weight <= 0:
            raise InputError(f"bad features: static_weight must be a positive number, not {weight!r}")
    return params


def make_features(settings: Settings, options: TrainOptions) -> TextFeatures:
    """The unfitted feature step of a job (its parameters checked by `feature_params`)."""
    return TextFeatures(**feature_params(settings, options))


def fit_router(
    train: pd.DataFrame, val: pd.DataFrame, features: TextFeatures, options: TrainOptions, settings: Settings,
) -> tuple[Router, dict[str, float]]:
    """Fit the features (unfitted, from `make_features`) and the classifier, calibrate, and choose the threshold
    on the validation rows."""
    timings: dict[str, float] = {}
    classifier_name = options.classifier or settings.classifier
    policy = options.threshold_policy or settings.threshold_policy
    random_state = settings.random_state if options.random_state is None else options.random_state
    texts, labels = train["text"].tolist(), train["label"].to_numpy(dtype=object)
    t0 = time.perf_counter()
    try:
        x = features.fit_transform(texts, static_encoder=_static_encoder(features, settings))
    except ValueError as exc:
        raise InsufficientDataError(f"cannot build features from the training texts: {exc}") from None
    timings["featurise_s"] = time.perf_counter() - t0
    clf = make_classifier(classifier_name, C=options.C, random_state=random_state)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # the iteration budget is the early stop (see make_classifier); the warning says so every time
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, labels)
    timings["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    val_in = val[val["label"] != settings.oos_label]
    if hasattr(clf, "calibrate") and len(val_in):
        # calibrated on held-out rows: the threshold below is then a probability that means the same per version
        clf.calibrate(features.transform(val_in["text"].tolist()), val_in["label"].tolist())
    router = Router(Pipeline([("features", features), ("classifier", clf)]), settings.uncertain_threshold)
    threshold, used = settings.uncertain_threshold, "fixed"
    if len(val):
        scored = score(router, val)
        is_oos = (val["label"] == settings.oos_label).to_numpy()
        in_known = ~is_oos & val["label"].isin(set(router.labels)).to_numpy()
        threshold, used = choose_threshold(
            policy, scored.confidence[in_known], scored.correct[in_known], scored.confidence[is_oos],
            settings.uncertain_threshold, settings.target_coverage,
        )
    router.threshold = threshold
    router.margin = settings.ambiguity_margin
    timings["threshold_s"] = time.perf_counter() - t0
    router.info.update({
        "classifier": classifier_name, "C": options.C, "threshold_policy": policy, "threshold_policy_used": used,
        "feature_set": features.feature_set_id(), "n_features": int(features.n_features_out_),
        "nltk_data": features.required_nltk_data(), "temperature": float(getattr(clf, "temperature_", 1.0)),
        "ambiguity_margin": router.margin,
    })
    return router, timings


def _static_encoder(features: TextFeatures, settings: Settings) -> Any:
    """The static block's encoder, built (or read from the `cache` setting's directory) when the features use it."""
    if not features.static:
        return None
    from intelrouter.static_table import build_encoder

    return build_encoder(features.static, cache=settings.cache)
