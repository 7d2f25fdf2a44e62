"""Fitting: text features and a classifier on the training rows, calibrated and thresholded on validation rows.

No MLflow and no store here: `intelrouter.jobs` wires this step into a tracked, registered training run, and the
benchmarks call it directly. Out-of-scope rows (the `oos_label` setting) are never a class: in the validation
rows they choose the threshold (policy `balanced` or `accuracy`).
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator
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


class FeatureParams(BaseModel):
    """What `--features` / TrainOptions.features may set (TextFeatures' parameters), checked before any fit."""

    model_config = ConfigDict(extra="forbid", strict=True)

    word_ngrams: tuple[PositiveInt, PositiveInt] | None = None
    char_ngrams: tuple[PositiveInt, PositiveInt] | None = None
    min_df: int | float | None = None
    max_word_features: PositiveInt | None = None
    max_char_features: PositiveInt | None = None
    stems: bool | None = None
    signals: bool | None = None
    signal_weight: Annotated[float, Field(ge=0)] | None = None
    pos_tags: bool | None = None
    static: str | None = None
    static_weight: Annotated[float, Field(gt=0)] | None = None
    dtype: Literal["float32", "float64"] | None = None

    @field_validator("min_df", mode="before")
    @classmethod
    def _min_df(cls, value: Any) -> Any:
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if value is None or whole or (isinstance(value, float) and 0 < value <= 1):
            return value
        raise ValueError("must be a number of texts (1 or more) or a share of them in (0, 1]")

    @model_validator(mode="after")
    def _ranges(self) -> FeatureParams:
        for name in ("word_ngrams", "char_ngrams"):
            pair = getattr(self, name)
            if pair is not None and pair[0] > pair[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high, not {list(pair)}")
        given = self.model_fields_set
        off = [n for n in ("word_ngrams", "char_ngrams") if n in given and getattr(self, n) is None]
        off += [n for n in ("signals", "pos_tags") if (n in given and not getattr(self, n)) or
                (n == "pos_tags" and n not in given)]
        if len(off) == 4 and not self.static:
            raise ValueError("every kind of feature is switched off: keep word_ngrams, char_ngrams, signals, "
                             "pos_tags or static")
        return self


def feature_params(settings: Settings, options: TrainOptions) -> dict[str, Any]:
    """The TextFeatures parameters of a job: the `static_features` setting, then the job's own; bad ones: InputError."""
    params = {"static": settings.static_features} if settings.static_features else {}
    params.update(options.features)
    try:  # JSON mode: [1, 2] is a pair, but "2" is not a number and "yes" not a boolean
        FeatureParams.model_validate_json(json.dumps(params))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = err["loc"][0] if err["loc"] else None
        what = f"{name}={json.dumps(params[name])}: " if name in params else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"not a feature parameter (use {', '.join(FeatureParams.model_fields)})"
        raise InputError(f"bad features: {what}{msg}") from None
    try:
        TextFeatures(**params)
    except TypeError as exc:
        raise InputError(f"bad features {params}: {exc}") from None
    if params.get("static"):
        parse_variant(params["static"])
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
    if isinstance(features.min_df, int) and features.min_df > len(texts):
        raise InputError(f"bad features: min_df={features.min_df} is more than the {len(texts)} training texts")
    t0 = time.perf_counter()
    try:
        x = features.fit_transform(texts, static_encoder=_static_encoder(features, settings))
    except ValueError as exc:
        if "vocabulary" in str(exc):  # no word survives: the training texts, not the features, are the problem
            raise InsufficientDataError(f"cannot build features from the training texts: {exc}") from None
        raise InputError(f"bad features {features.feature_set_id()}: {exc}") from None
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
