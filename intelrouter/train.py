"""Training: ground truth from `ml_data` (or its JSONL export) → fit → threshold → evaluate → gate → register.

`intelrouter train` and `mlflow run . -e train` both call `train()`. Out-of-scope rows (settings.oos_label)
are never a class: they choose the threshold (policy `balanced`) and measure out-of-scope recall.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intelrouter import __version__, store, triage
from intelrouter.config import Settings
from intelrouter.errors import InputError, InsufficientDataError, IntelRouterError, RegistryError
from intelrouter.evaluate import POLICIES, Scored, choose_threshold, slice_metrics, write_plots, write_tables
from intelrouter.features import TextFeatures
from intelrouter.gate import GateResult, GateRules, ScoredSlice, gate
from intelrouter.jsonl import iter_objects
from intelrouter.model import CLASSIFIERS, ROUTER_FILE, Router, make_classifier

COLUMNS = ["id", "text", "label", "created_at", "split", "language", "source"]
TRAIN_SPLITS, VAL_SPLITS, TEST_SPLITS = {"train"}, {"val", "validation", "dev"}, {"test"}
SLICES = ("test", "recent")
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


class TrainOptions(BaseModel):
    """One training job's knobs; unset ones come from the settings."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("db", description="`db` (ml_data) or the path of a JSONL export.")
    test_size: float | None = Field(None, gt=0, lt=1)
    random_state: int | None = None
    min_samples: int | None = Field(None, ge=1)
    C: float = Field(10.0, gt=0)
    threshold_policy: str | None = None
    classifier: str | None = None
    features: dict[str, Any] = Field(default_factory=dict, description="TextFeatures parameters.")


@dataclass
class Splits:
    """Train rows (in-scope only), validation rows (threshold, calibration) and test rows."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    how: str


@dataclass
class TrainResult:
    """What a training run produced."""

    run_id: str
    version: str | None
    semver: str
    lifecycle: str
    gate: GateResult
    metrics: dict[str, float]
    threshold: float
    report_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    marked_rows: int = 0


# --- data ---------------------------------------------------------------------------------------


def load_examples(settings: Settings, source: str = "db") -> tuple[pd.DataFrame, str]:
    """Ground-truth rows (id, text, label, created_at, split, language, source) and a description of where from."""
    if source == "db":
        from sqlalchemy import select

        t = store.ml_data
        with store.connect(settings) as conn:
            rows = conn.execute(select(*(t.c[c] for c in COLUMNS)).order_by(t.c.id)).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows], columns=COLUMNS)

        return _clean(frame), f"ml_data@{store.safe_url(settings)}"
    return _clean(_read_jsonl(Path(source))), str(Path(source).resolve())


def _read_jsonl(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: no such file (the training source is `db` or a JSONL export)")
    records = []
    for lineno, obj in iter_objects(path, suffix=""):
        if "text" not in obj or "label" not in obj:
            raise InputError(f"{path}:{lineno}: each line needs a JSON object with `text` and `label`")
        try:
            created = store.parse_when(obj.get("created_at"), "created_at")
        except InputError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
        records.append({c: obj.get(c) for c in COLUMNS} | {"created_at": created})
    return pd.DataFrame(records, columns=COLUMNS)


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["text"] = frame["text"].astype("string").fillna("")
    frame["label"] = frame["label"].astype("string").fillna("").str.strip()
    frame = frame[(frame["text"].str.strip() != "") & (frame["label"] != "")]
    frame["split"] = frame["split"].astype("string").str.strip().str.lower()
    frame["created_at"] = pd.to_datetime(frame["created_at"], errors="coerce")
    return frame.reset_index(drop=True)


def data_digest(frame: pd.DataFrame) -> str:
    """A SHA-256 over the rows' ids, texts, labels and splits (order-independent)."""
    lines = sorted(
        "\x1f".join(str(v) for v in row)
        for row in frame[["id", "text", "label", "split"]].astype("string").fillna("").itertuples(index=False)
    )
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def _stratified_take(frame: pd.DataFrame, share: float, rng: np.random.Generator) -> np.ndarray:
    """Row mask of a stratified sample: about `share` of each label, never all of a label's rows."""
    take = np.zeros(len(frame), dtype=bool)
    for _, positions in frame.groupby("label", sort=True).indices.items():
        n = len(positions)
        k = min(max(int(round(n * share)), 1), n - 1) if n >= 2 else 0
        if k:
            take[rng.permutation(positions)[:k]] = True
    return take


def split_examples(
    frame: pd.DataFrame, oos_label: str, test_size: float, random_state: int, need_val: bool
) -> Splits:
    """Honour a `split` column (train/val/test) when the rows carry one; otherwise split by label."""
    rng = np.random.default_rng(random_state)
    is_oos = (frame["label"] == oos_label).to_numpy()
    split = frame["split"].fillna("").to_numpy()
    if np.isin(split, list(TRAIN_SPLITS | VAL_SPLITS | TEST_SPLITS)).any():
        how = "split column"
        val_mask = np.isin(split, list(VAL_SPLITS)) | (is_oos & ~np.isin(split, list(TEST_SPLITS)))
        test_mask = np.isin(split, list(TEST_SPLITS))
        train_mask = ~(val_mask | test_mask | is_oos)
        if not test_mask.any():
            how += ", test carved from train"
            test_mask = _carve(frame, train_mask, test_size, rng)
            train_mask &= ~test_mask
    else:
        how = f"stratified {test_size:g} test"
        oos_pos = np.flatnonzero(is_oos)
        test_mask = _stratified_take(frame, test_size, rng) & ~is_oos
        val_mask = np.zeros(len(frame), dtype=bool)
        # out-of-scope rows are never trained on: half choose the threshold, half measure OOS recall
        shuffled = rng.permutation(oos_pos)
        n_val = len(shuffled) // 2 if need_val else 0
        val_mask[shuffled[:n_val]] = True
        test_mask[shuffled[n_val:]] = True
        train_mask = ~(test_mask | val_mask)
    if need_val and not (val_mask & ~is_oos).any():
        how += ", validation carved from train"
        carved = _carve(frame, train_mask, test_size, rng)
        val_mask |= carved
        train_mask &= ~carved
    return Splits(frame[train_mask].reset_index(drop=True), frame[val_mask].reset_index(drop=True),
                  frame[test_mask].reset_index(drop=True), how)


def _carve(frame: pd.DataFrame, mask: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(len(frame), dtype=bool)
    pos = np.flatnonzero(mask)
    out[pos[_stratified_take(frame.iloc[pos], share, rng)]] = True
    return out


# --- fitting ------------------------------------------------------------------------------------


def feature_params(settings: Settings, options: TrainOptions) -> dict[str, Any]:
    """The TextFeatures parameters of a job: the `static_features` setting, then the job's own; bad ones: InputError."""
    params = {"static": settings.static_features} if settings.static_features else {}
    params.update(options.features)
    try:
        TextFeatures(**params)
    except TypeError as exc:
        raise InputError(f"bad features {params}: {exc}") from None
    if params.get("static"):
        from intelrouter.static import parse_variant

        parse_variant(params["static"])
        weight = params.get("static_weight", 1.0)
        if not isinstance(weight, int | float) or weight <= 0:
            raise InputError(f"bad features: static_weight must be a positive number, not {weight!r}")
    return params


def fit_router(
    train: pd.DataFrame, val: pd.DataFrame, options: TrainOptions, settings: Settings
) -> tuple[Router, dict[str, float]]:
    """Fit features and classifier, calibrate and choose the threshold on the validation rows."""
    timings: dict[str, float] = {}
    classifier_name = options.classifier or settings.classifier
    policy = options.threshold_policy or settings.threshold_policy
    random_state = settings.random_state if options.random_state is None else options.random_state
    features = TextFeatures(**feature_params(settings, options))
    texts, labels = train["text"].tolist(), train["label"].to_numpy(dtype=object)
    t0 = time.perf_counter()
    try:
        x = features.fit_transform(texts)
    except ValueError as exc:
        raise InsufficientDataError(f"cannot build features from the training texts: {exc}") from None
    timings["featurise_s"] = time.perf_counter() - t0
    clf = make_classifier(classifier_name, C=options.C, random_state=random_state)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # the iteration budget is the early stop (see make_classifier); the warning says so every time
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, labels)
    timings["fit_s"] = time.perf_counter() - t0
    from sklearn.pipeline import Pipeline

    router = Router(Pipeline([("features", features), ("classifier", clf)]), settings.uncertain_threshold)
    t0 = time.perf_counter()
    known = set(router.labels)
    val_in = val[val["label"] != settings.oos_label]
    if hasattr(clf, "calibrate") and len(val_in):
        # calibrated on held-out rows: the threshold below is then a probability that means the same per version
        clf.calibrate(features.transform(val_in["text"].tolist()), val_in["label"].tolist())
        router.refresh()
    threshold, used = settings.uncertain_threshold, "fixed"
    if len(val):
        scored = score(router, val)
        conf = scored.confidence
        is_oos = (val["label"] == settings.oos_label).to_numpy()
        in_known = ~is_oos & val["label"].isin(known).to_numpy()
        correct = np.array(scored.top, dtype=object) == val["label"].to_numpy(dtype=object)
        threshold, used = choose_threshold(
            policy, conf[in_known], correct[in_known], conf[is_oos], settings.uncertain_threshold,
            settings.target_coverage,
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


def score(router: Router, frame: pd.DataFrame) -> Scored:
    """The router's probabilities on some rows."""
    texts = frame["text"].tolist()
    proba = router.predict_proba(texts) if texts else np.zeros((0, len(router.labels)))
    return Scored(frame["label"].tolist(), proba, router.labels)


def recent_mask(frame: pd.DataFrame, days: int) -> np.ndarray:
    """Rows created within the last `days` days (naive UTC)."""
    since = pd.Timestamp(store.utcnow() - timedelta(days=days))
    return (frame["created_at"] >= since).fillna(False).to_numpy(dtype=bool)


def gate_slices(scored: Scored, recent: np.ndarray, oos_label: str) -> dict[str, ScoredSlice]:
    """The gate's view of a model: in-scope rows of the full test set and of the recent slice."""
    truth = np.array(scored.y_true, dtype=object)
    top = np.array(scored.top, dtype=object)
    inscope = truth != oos_label
    return {
        "test": ScoredSlice(list(truth[inscope]), list(top[inscope])),
        "recent": ScoredSlice(list(truth[inscope & recent]), list(top[inscope & recent])),
    }


def gate_rules(settings: Settings) -> GateRules:
    """The gate's rules from the settings."""
    return GateRules(min_accuracy=settings.gate_min_accuracy, min_macro_f1=settings.gate_min_macro_f1,
                     tolerance=settings.gate_tolerance, seed=settings.random_state)


# --- MLflow -------------------------------------------------------------------------------------


def ensure_experiment(settings: Settings) -> str:
    """The experiment's id, creating it with an explicit artifact location when it does not exist."""
    from intelrouter.registry import call, get_client

    client = get_client(settings)
    exp = call(settings, "experiment", client.get_experiment_by_name, settings.mlflow_experiment)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            call(settings, "experiment", client.restore_experiment, exp.experiment_id)
        return exp.experiment_id
    if settings.tracking_uri.split(":", 1)[0] in ("http", "https", "databricks"):
        # a tracking server stores (or proxies) artifacts itself: a client-side path would bypass it
        return call(settings, "experiment", client.create_experiment, settings.mlflow_experiment)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return call(settings, "experiment", client.create_experiment, settings.mlflow_experiment,
                artifact_location=settings.artifacts_dir.as_uri())


def code_version() -> str:
    """The git commit of the code when it is a checkout with commits, else the package version."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    pins = [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "numpy", "scipy", "pandas", "nltk")]
    return [f"intelrouter=={__version__}", *pins]


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "confidence"),
                        ColSpec("string", "top_label"), ColSpec("boolean", "uncertain")]),
    )


def _flat_metrics(per_slice: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{name}_{k}": float(v) for name, values in per_slice.items() for k, v in values.items()}


def _label_counts(frame: pd.DataFrame, limit: int = 1000) -> dict[str, int]:
    # the dataset source is stored in a 64 KB column: the most frequent labels are plenty
    return {str(k): int(v) for k, v in frame["label"].value_counts().head(limit).items()}


def _log_dataset(frame: pd.DataFrame, where: str, digest: str, splits: Splits) -> None:
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource

    view = frame[["id", "text", "label", "split", "created_at"]].astype({"split": "object", "id": "object"})
    view = view.assign(created_at=view["created_at"].astype("string"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # schema hints about integer ids
        dataset = mlflow.data.from_pandas(
            view, source=CodeDatasetSource({"source": where, "label_distribution": _label_counts(frame)}),
            targets="label", name="ml_data", digest=digest[:32],
        )
        mlflow.log_input(dataset, context="training", tags={
            "rows": str(len(frame)), "train_rows": str(len(splits.train)), "val_rows": str(len(splits.val)),
            "test_rows": str(len(splits.test)), "labels": str(frame["label"].nunique()),
        })


# --- the job ------------------------------------------------------------------------------------


def train(settings: Settings, options: TrainOptions | None = None, **overrides: Any) -> TrainResult:
    """Train, evaluate, gate and register one version; a failure moves no alias and marks no rows."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import mlflow

    try:
        options = TrainOptions(**{**(options.model_dump() if options else {}), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"bad training option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    classifier_name = options.classifier or settings.classifier
    if classifier_name not in CLASSIFIERS:
        raise InputError(f"unknown classifier {classifier_name!r}: use one of {', '.join(CLASSIFIERS)}")
    policy = options.threshold_policy or settings.threshold_policy
    if policy not in POLICIES:
        raise InputError(f"unknown threshold policy {policy!r}: use {', '.join(POLICIES)}")
    test_size = options.test_size or settings.test_size
    random_state = settings.random_state if options.random_state is None else options.random_state
    min_samples = options.min_samples or settings.min_samples
    features = feature_params(settings, options)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    t0 = time.perf_counter()
    frame, where = load_examples(settings, options.source)
    inscope = frame[frame["label"] != settings.oos_label]
    if len(inscope) < min_samples:
        raise InsufficientDataError(f"Insufficient training data: {len(inscope)} samples, need at least {min_samples}")
    if inscope["label"].nunique() < 2:
        raise InsufficientDataError("Insufficient training data: need at least 2 different labels")
    need_val = True  # every classifier's confidences are calibrated on held-out rows
    splits = split_examples(frame, settings.oos_label, test_size, random_state, need_val)
    if len(splits.train) < 2 or splits.train["label"].nunique() < 2:
        raise InsufficientDataError("Insufficient training data: the training split needs at least 2 labels")
    digest = data_digest(frame)
    timings["load_s"] = time.perf_counter() - t0

    from intelrouter import registry

    feature_set = TextFeatures(**features).feature_set_id()
    semver = registry.next_semver(settings, feature_set)
    experiment_id = ensure_experiment(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    run_name = "v" + store.utcnow().strftime("%Y%m%d_%H%M%S")
    launched = os.environ.get("MLFLOW_RUN_ID")  # `mlflow run` created the run: log into it
    tags = {"semver": semver, "data_digest": digest, "code_version": code_version(), "lifecycle": "testing",
            "feature_set": feature_set, "mlflow.runName": run_name}
    version: str | None = None
    try:
        with mlflow.start_run(run_id=launched, experiment_id=None if launched else experiment_id,
                              run_name=None if launched else run_name, tags=None if launched else tags) as run:
            if launched:
                mlflow.set_tags(tags)
            router, fit_times = fit_router(splits.train, splits.val, options, settings)
            timings.update(fit_times)
            router.info.update({"semver": semver, "trained_at": store.utcnow().isoformat(), "data_digest": digest})

            t0 = time.perf_counter()
            test_scored = score(router, splits.test)
            recent = recent_mask(splits.test, settings.recent_days)
            per_slice = {
                "test": slice_metrics(test_scored, router.threshold, settings.oos_label),
                "recent": slice_metrics(test_scored.subset(recent), router.threshold, settings.oos_label),
            }
            timings["evaluate_s"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            baseline_version, baseline_slices = None, None
            loaded = registry.load_alias(settings, "production")
            if loaded is not None:
                baseline_version = loaded[0].version
                base_scored = score(loaded[1], splits.test)
                baseline_slices = gate_slices(base_scored, recent, settings.oos_label)
                base_metrics = slice_metrics(base_scored, loaded[1].threshold, settings.oos_label)
                mlflow.log_metrics({f"production_test_{k}": v for k, v in base_metrics.items()
                                    if not k.startswith("f1_")})
            decision = gate(gate_slices(test_scored, recent, settings.oos_label), baseline_slices, gate_rules(settings))
            timings["gate_s"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            params = {
                "source": options.source, "test_size": test_size, "random_state": random_state,
                "min_samples": min_samples, "C": options.C, "classifier": classifier_name,
                "threshold_policy": policy, "threshold_policy_used": router.info["threshold_policy_used"],
                "threshold": round(router.threshold, 6), "feature_set": feature_set,
                "n_features": router.info["n_features"], "split": splits.how,
                "train_rows": len(splits.train), "val_rows": len(splits.val), "test_rows": len(splits.test),
                "recent_days": settings.recent_days, "baseline_version": baseline_version or "none",
                **{f"features.{k}": v for k, v in features.items()},
            }
            # `mlflow run` already logged its -P parameters (as typed): MLflow refuses to change a param
            logged = mlflow.get_run(run.info.run_id).data.params if launched else {}
            mlflow.log_params({k: v for k, v in params.items() if k not in logged})
            _log_dataset(frame, where, digest, splits)
            metrics = _flat_metrics(per_slice)
            mlflow.log_metrics(metrics | {"threshold": router.threshold, "temperature": router.info["temperature"]})
            mlflow.log_dict(_label_counts(frame, limit=len(frame)), "label_distribution.json")
            mlflow.set_tags({"gate": "passed" if decision.passed else "failed",
                             "gate_reasons": "; ".join(decision.reasons)[:4900]})
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                texts = splits.test["text"].tolist()
                write_plots(test_scored, router.threshold, settings.oos_label, out / "plots")
                write_tables(test_scored, texts, router.threshold, settings.oos_label, out / "tables")
                mlflow.log_artifacts(str(out / "plots"), "plots")
                mlflow.log_artifacts(str(out / "tables"), "evaluation")
                mlflow.log_dict({"passed": decision.passed, "reasons": decision.reasons}, "gate.json")
                router_path = router.save(out / ROUTER_FILE)
                example = pd.DataFrame({"text": texts[:3] or ["hello"]})
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # type-hint advice; our signature is explicit
                    info = mlflow.pyfunc.log_model(
                        name="model", python_model=str(PYFUNC_CODE), artifacts={"router": str(router_path)},
                        signature=_signature(), input_example=example, pip_requirements=_pip_requirements(),
                    )
            timings["log_s"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            version_tags = {
                "semver": semver, "lifecycle": "testing", "threshold": f"{router.threshold:.6f}",
                "threshold_policy": router.info["threshold_policy_used"], "feature_set": feature_set,
                "data_digest": digest, "code_version": tags["code_version"], "classifier": classifier_name,
                "test_accuracy": f"{per_slice['test'].get('accuracy', 0):.4f}",
                "test_macro_f1": f"{per_slice['test'].get('macro_f1', 0):.4f}",
                "recent_accuracy": f"{per_slice['recent'].get('accuracy', 0):.4f}",
            }
            mv = registry.call(settings, "register model", mlflow.register_model, info.model_uri,
                               settings.model_name, tags=version_tags)
            version = str(mv.version)
            lifecycle = registry.apply_gate(settings, version, decision.passed, decision.reasons)
            mlflow.set_tags({"lifecycle": lifecycle, "model_version": version})
            timings["register_s"] = time.perf_counter() - t0
    except IntelRouterError:
        raise
    except Exception as exc:
        if _is_mlflow_error(exc):
            raise RegistryError(registry.failure_message(settings, exc)) from None
        raise

    # seed 004: only a version that passed the gate uses up its samples (train, validation and test rows alike:
    # all of them shaped it); a rejected one leaves them for the next
    used = pd.concat([splits.train, splits.val, splits.test], ignore_index=True)
    marked = mark_trained(settings, used, semver) if decision.passed else 0
    timings["total_s"] = time.perf_counter() - started
    result = TrainResult(run_id=run.info.run_id, version=version, semver=semver, lifecycle=lifecycle, gate=decision,
                         metrics=metrics, threshold=router.threshold, report_path=None, timings=timings,
                         marked_rows=marked)
    result.report_path = write_report(settings, result, frame, splits, router)
    return result


def _is_mlflow_error(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException | ConnectionError | OSError)


def mark_trained(settings: Settings, used_rows: pd.DataFrame, semver: str) -> int:
    """Mark the ml_data rows this version used (train, validation, test; only rows no version used before)."""
    from sqlalchemy import bindparam, update

    ids = used_rows["id"].dropna()
    if ids.empty:
        return 0
    rows = [{"b_id": int(i), "b_text": str(t), "b_label": str(lab)}
            for i, t, lab in zip(used_rows["id"], used_rows["text"], used_rows["label"], strict=True)
            if i is not None and not pd.isna(i) and str(i).lstrip("-").isdigit()]
    t = store.ml_data
    stmt = (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.text == bindparam("b_text"), t.c.label == bindparam("b_label"),
               t.c.trained_version.is_(None))
        .values(trained_version=semver)
    )
    with store.connect(settings) as conn:
        before = store.count(conn, "SELECT COUNT(*) FROM ml_data WHERE trained_version = :v", v=semver)
        for i in range(0, len(rows), 5000):
            conn.execute(stmt, rows[i : i + 5000])
        return store.count(conn, "SELECT COUNT(*) FROM ml_data WHERE trained_version = :v", v=semver) - before


def write_report(settings: Settings, result: TrainResult, frame: pd.DataFrame, splits: Splits, router: Router) -> Path:
    """logs/training-router-vX.Y.Z.json: the version, its data, metrics, gate decision and timings."""
    keys = ("accuracy", "macro_f1", "weighted_f1", "coverage", "answered_accuracy", "uncertain_rate", "ece",
            "oos_recall", "inscope_accuracy_at_threshold", "rows")
    report = {
        "version": result.version, "semver": result.semver, "run_id": result.run_id, "lifecycle": result.lifecycle,
        "created_at": store.utcnow().isoformat(), "model_name": settings.model_name,
        "gate": {"passed": result.gate.passed, "reasons": result.gate.reasons},
        "threshold": result.threshold, "info": router.info,
        "data": {"rows": len(frame), "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                 "split": splits.how, "labels": dict(Counter(frame["label"])), "marked_rows": result.marked_rows},
        "metrics": {s: {k: result.metrics[f"{s}_{k}"] for k in keys if f"{s}_{k}" in result.metrics} for s in SLICES},
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }
    return triage.write_report(settings, f"training-router-v{result.semver}.json", report)
