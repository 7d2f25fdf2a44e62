"""The MLflow jobs: training (`intelrouter train`, `mlflow run . -e train`) and evaluation (`intelrouter evaluate`).

A training run is a handful of named steps — prepare the data, fit, compare with @production, log, mark the rows,
register, move the alias — inside one tracked run and the lifecycle lock (one training at a time); only a version
that passed the gate marks the rows it used. A failure before the rows are marked changes nothing; after, a retry
of the same job resumes (`resume`) and anything else is undone or finished by `recovery`.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from sqlalchemy import bindparam, update

from intelrouter import audit, drift, lifecycle, loading, locks, recovery, registry, resume, rollout, store, tracking
from intelrouter.config import Settings
from intelrouter.data import Splits, collapse_copies, data_digest, load_examples, recent_mask, split_examples
from intelrouter.errors import InputError, InsufficientDataError
from intelrouter.evaluate import SLICES, Comparison, compare
from intelrouter.features import TextFeatures
from intelrouter.gate import GateResult
from intelrouter.jsonfiles import write_report
from intelrouter.model import Router
from intelrouter.names import PRODUCTION
from intelrouter.plots import write_plots, write_tables
from intelrouter.recovery import JOB_TAG
from intelrouter.train import TrainOptions, feature_params, fit_router


@dataclass
class TrainingData:
    """What a training run learns from: the rows, their splits, where they came from, their digest."""

    frame: pd.DataFrame
    splits: Splits
    recent: np.ndarray  # which test rows are in the recent slice
    where: str
    digest: str
    features: TextFeatures  # unfitted, its parameters checked
    params: dict[str, Any]  # the features' parameters, for the run's params
    copies: int = 0  # rows dropped because another row holds the same text (one row per question)
    label_audit: audit.AuditResult | None = None  # the teacher audit: likely label errors left out of this training

    @property
    def comparison_digest(self) -> str:
        """Digest of the rows the gate compares on: the test split, which no version ever trained on."""
        return data_digest(self.splits.test)


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
    aliases: dict[str, Any] = field(default_factory=dict)  # where @production and @staging point afterwards
    resumed: bool = False  # a retry that found the version registered and finished the job
    shadow: dict[str, Any] | None = None  # the shadow replay's verdict (rollout.ShadowVerdict.as_dict)


def train_options(options: TrainOptions | None = None, **overrides: Any) -> TrainOptions:
    """Options merged with overrides; a bad one is one InputError line naming it."""
    try:
        return TrainOptions(**{**(options.model_dump() if options else {}), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"bad training option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def prepare(settings: Settings, options: TrainOptions) -> TrainingData:
    """Load the approved ground truth, refuse too little of it, split and digest it."""
    params = feature_params(settings, options)  # bad features fail before any data loads
    min_samples = options.min_samples or settings.min_samples
    frame, where = load_examples(settings, options.source)
    frame, copies = collapse_copies(frame)
    inscope = frame[frame["label"] != settings.oos_label]
    if len(inscope) < min_samples:
        raise InsufficientDataError(f"Insufficient training data: {len(inscope)} samples, need at least {min_samples}")
    if inscope["label"].nunique() < 2:
        raise InsufficientDataError("Insufficient training data: need at least 2 different labels")
    random_state = settings.random_state if options.random_state is None else options.random_state
    shares = (options.test_size or settings.test_size, settings.val_size)  # for rows that arrive without a split
    splits = split_examples(frame, settings.oos_label, shares, random_state)
    splits, audited = audit.screen(frame, splits, settings, params, options.classifier or settings.classifier,
                                   options.C, random_state)
    if options.source == "db":
        audit.send_to_review(settings, audited)
    frame = frame[~frame["text_key"].isin(audited.excluded_keys)].reset_index(drop=True)
    if len(splits.train) < 2 or splits.train["label"].nunique() < 2:
        raise InsufficientDataError("Insufficient training data: the training split needs at least 2 labels")
    return TrainingData(frame, splits, recent_mask(splits.test, settings.recent_days), where, data_digest(frame),
                        TextFeatures(**params), params, copies, audited)


def judge(settings: Settings, router: Router, data: TrainingData) -> tuple[Comparison, str | None]:
    """The candidate against @production on the same test rows (full and recent slice), gated."""
    loaded = loading.load_alias(settings, PRODUCTION)
    comparison = compare(router, loaded[1] if loaded else None, data.splits.test, data.recent, settings)
    return comparison, str(loaded[0].version) if loaded else None


def shadow(settings: Settings, router: Router, data: TrainingData, comparison: Comparison,
           baseline_version: str | None) -> rollout.ShadowVerdict:
    """Before registering: keep what drift monitoring needs with the model, and replay a candidate that passed the
    gate on recent traffic beside @production (`rollout.shadow`); both logged on the run."""
    router.info["drift_reference"] = drift.reference(router, data.splits.train["label"],
                                                     data.splits.test["text"].tolist(), comparison.candidate.confidence)
    verdict = rollout.shadow(settings, router, baseline_version, passed=comparison.decision.passed)
    rollout.log_on_run(verdict, router.info["drift_reference"])
    return verdict


def log_run(run: Any, settings: Settings, options: TrainOptions, data: TrainingData, router: Router,
            comparison: Comparison, baseline_version: str | None) -> tuple[dict[str, float], str]:
    """Params, metrics, the dataset, plots, tables, the gate decision and the model: (metrics, model URI)."""
    import mlflow

    splits, decision = data.splits, comparison.decision
    metrics = {f"{s}_{k}": float(v) for s in SLICES for k, v in comparison.metrics[f"candidate_{s}"].items()}
    if comparison.baseline is not None:
        metrics |= {f"production_{s}_{k}": float(v) for s in SLICES
                    for k, v in _headline(comparison.metrics[f"baseline_{s}"]).items()}
    params = {
        "source": options.source, "test_size": options.test_size or settings.test_size,
        "random_state": settings.random_state if options.random_state is None else options.random_state,
        "min_samples": options.min_samples or settings.min_samples, "C": options.C,
        "classifier": router.info["classifier"], "threshold_policy": router.info["threshold_policy"],
        "threshold_policy_used": router.info["threshold_policy_used"], "threshold": round(router.threshold, 6),
        "feature_set": router.info["feature_set"], "n_features": router.info["n_features"], "split": splits.how,
        "train_rows": len(splits.train), "val_rows": len(splits.val), "test_rows": len(splits.test),
        "recent_days": settings.recent_days, "baseline_version": baseline_version or "none",
        "copies_collapsed": data.copies, "comparison_rows": len(splits.test), "recent_rows": int(data.recent.sum()),
        **{f"features.{k}": v for k, v in data.params.items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        out, texts = Path(tmp), splits.test["text"].tolist()
        write_plots(comparison.candidate, router.threshold, settings.oos_label, out / "plots")
        write_tables(comparison.candidate, texts, router.threshold, settings.oos_label, out / "tables")
        tracking.log_new_params(run, params)
        tracking.log_dataset(data.frame, data.where, data.digest,
                             {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)})
        mlflow.log_metrics(metrics | {"threshold": router.threshold, "temperature": router.info["temperature"]})
        mlflow.log_dict(tracking.label_counts(data.frame, limit=len(data.frame)), "label_distribution.json")
        mlflow.set_tags({"gate": "passed" if decision.passed else "failed", "comparison_digest": data.comparison_digest,
                         "gate_reasons": "; ".join(decision.reasons)[:4900]})
        mlflow.set_tag(tracking.NOTE_TAG, tracking.run_note(router, splits, data.digest, metrics, decision))
        mlflow.log_dict({name: [_row_id(i) for i in part["id"]] for name, part in
                         (("train", splits.train), ("val", splits.val), ("test", splits.test))}, "splits.json")
        mlflow.log_dict({"passed": decision.passed, "reasons": decision.reasons}, "gate.json")
        mlflow.log_artifacts(str(out / "plots"), "plots")
        mlflow.log_artifacts(str(out / "tables"), "evaluation")
        info = tracking.log_router(router, texts, out)
    audit.log_to_run(data.label_audit)
    return metrics, info.model_uri


def register(settings: Settings, model_uri: str, router: Router, data: TrainingData, semver: str,
             decision: GateResult, metrics: dict[str, float], job_key: str,
             verdict: rollout.ShadowVerdict | None = None) -> str:
    """Register the logged model with its tags (lifecycle `testing`, the shadow verdict) and name the version on the
    run."""
    import mlflow

    tags = {
        "semver": semver, "lifecycle": "testing", "threshold": f"{router.threshold:.6f}",
        "threshold_policy": router.info["threshold_policy_used"], "feature_set": router.info["feature_set"],
        "data_digest": data.digest, "code_version": tracking.code_version(), "classifier": router.info["classifier"],
        "test_accuracy": f"{metrics.get('test_accuracy', 0):.4f}",
        "test_macro_f1": f"{metrics.get('test_macro_f1', 0):.4f}",
        "recent_accuracy": f"{metrics.get('recent_accuracy', 0):.4f}", JOB_TAG: job_key,
    }
    if verdict is not None:
        tags |= verdict.tags()
    note = tracking.run_note(router, data.splits, data.digest, metrics, decision)  # the run's note, on the version
    version = lifecycle.register(settings, model_uri, tags, note)
    mlflow.set_tags({"model_version": version})  # a retry of this job finds the version and resumes from here
    return version


def train(settings: Settings, options: TrainOptions | None = None, *, job_key: str | None = None,
          **overrides: Any) -> TrainResult:
    """Train, evaluate, gate, register and move one version, one training at a time (the lifecycle lock).

    `job_key` names a job that may be retried (the flows pass their task run id): a retry that finds the job's
    version registered finishes the steps after registration instead of training again. Without a key a failure
    is cleaned up at once (`recovery.recover`: marks released, version rejected); with one it waits for the retry.
    """
    options = train_options(options, **overrides)
    feature_params(settings, options)  # bad input: one line, before the lock and the registry are touched
    with locks.training_lock(settings) as lock:
        if job_key:
            registered = resume.find(settings, job_key)
            if registered is not None:
                return _resume(settings, registered, lock)
        recovery.recover(settings)
        try:
            return _train(settings, options, job_key or uuid.uuid4().hex, lock)
        except Exception:
            if not job_key:  # nobody retries this job: undo its marks and reject its version now
                _recover_quietly(settings)
            raise


def _train(settings: Settings, options: TrainOptions, job_key: str, lock: locks.Held) -> TrainResult:
    """The job's steps: prepare, fit, judge, log, mark the rows (a passing version), register, move the alias."""
    import mlflow

    timings: dict[str, float] = {}
    started = t0 = time.perf_counter()
    data = prepare(settings, options)
    timings["load_s"] = time.perf_counter() - t0
    feature_set = data.features.feature_set_id()
    semver = registry.next_semver(settings, feature_set)  # inside the lock: no other job can take the same one
    tags = {"semver": semver, "data_digest": data.digest, "code_version": tracking.code_version(),
            "lifecycle": "testing", "feature_set": feature_set, JOB_TAG: job_key}
    with tracking.tracked_run(settings, "v" + store.utcnow().strftime("%Y%m%d_%H%M%S"), tags) as run:
        router, fit_times = fit_router(data.splits.train, data.splits.val, data.features, options, settings)
        timings.update(fit_times)
        router.info.update({"semver": semver, "trained_at": store.utcnow().isoformat(), "data_digest": data.digest})
        t0 = time.perf_counter()
        comparison, baseline_version = judge(settings, router, data)
        timings["evaluate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        verdict = shadow(settings, router, data, comparison, baseline_version)
        timings["shadow_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics, model_uri = log_run(run, settings, options, data, router, comparison, baseline_version)
        timings["log_s"] = time.perf_counter() - t0
        decision = comparison.decision
        lock.check()
        t0 = time.perf_counter()
        # seed 004: only a version that passed the gate uses up its samples (train, validation and test rows alike:
        # all of them shaped it); one the shadow replay holds in testing leaves them for the next. They are marked
        # before the version is registered and moved: after a crash anywhere later, either a retry finishes the
        # move or recovery rejects the version and releases them.
        marked = mark_trained(settings, rows_used(data), semver) if decision.passed and not verdict.held else 0
        version = register(settings, model_uri, router, data, semver, decision, metrics, job_key, verdict)
        lock.check()
        stage = lifecycle.apply_gate(settings, version, decision.passed, decision.reasons,
                                     verdict.reasons if verdict.held else None)
        mlflow.set_tags({"lifecycle": stage})
        aliases = registry.where_aliases_point(settings)
        timings["register_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    result = TrainResult(run_id=run.info.run_id, version=version, semver=semver, lifecycle=stage, gate=decision,
                         metrics=metrics, threshold=router.threshold, report_path=None, timings=timings,
                         marked_rows=marked, aliases=aliases, shadow=verdict.as_dict())
    result.report_path = write_training_report(settings, result, data_summary(data), router.info)
    return result


def _resume(settings: Settings, found: resume.Registered, lock: locks.Held) -> TrainResult:
    """Finish a retried job whose version is registered: the gate's move, the run's status, the report."""
    recovery.recover(settings, keep=found.version)  # a move of ours cut short is finished here
    tags = registry.get_version(settings, found.version).tags
    stage = tags.get("lifecycle", "testing")
    hold = tags.get("shadow_reasons", "").split("; ") if tags.get("shadow") == "held" else None
    if stage == "testing":
        lock.check()
        stage = lifecycle.apply_gate(settings, found.version, found.passed, found.reasons, hold)
    client = registry.get_client(settings)
    registry.call(settings, "run", client.set_tag, found.run_id, "lifecycle", stage)
    if found.run_status != "FINISHED":
        registry.call(settings, "run", client.set_terminated, found.run_id, "FINISHED")
    with store.connect(settings) as conn:
        marked = store.count(conn, "SELECT COUNT(*) FROM ml_data WHERE trained_version = :v", v=found.semver)
    result = TrainResult(run_id=found.run_id, version=found.version, semver=found.semver, lifecycle=stage,
                         gate=GateResult(found.passed, found.reasons), metrics=found.metrics,
                         threshold=found.metrics.get("threshold", 0.0), report_path=None, marked_rows=marked,
                         aliases=registry.where_aliases_point(settings), resumed=True,
                         shadow={"status": tags.get("shadow", "not judged"), "reasons": hold or [],
                                 "note": "resumed: the verdict recorded on the version"})
    result.report_path = write_training_report(settings, result, found.data, found.info)
    return result


def _recover_quietly(settings: Settings) -> None:
    """Undo a failed job's marks and reject its version now; when that fails too, the next start does it."""
    try:
        recovery.recover(settings)
    except Exception:  # noqa: BLE001 - the job's own error is the one to report
        logging.getLogger(__name__).warning("could not clean up after the failed training; the next start will")


def rows_used(data: TrainingData) -> pd.DataFrame:
    """Every row a version trained, calibrated or was tested on."""
    return pd.concat([data.splits.train, data.splits.val, data.splits.test], ignore_index=True)


def data_summary(data: TrainingData) -> dict[str, Any]:
    """What the training report says about the data: rows per split, the split rule, label counts."""
    splits = data.splits
    return {"rows": len(data.frame), "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
            "split": splits.how, "labels": dict(Counter(data.frame["label"]))}


def mark_trained(settings: Settings, used_rows: pd.DataFrame, semver: str) -> int:
    """Mark the ml_data rows this version used (train, validation, test; only rows no version used before)."""
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


def write_training_report(settings: Settings, result: TrainResult, data: dict[str, Any], info: dict[str, Any]
                          ) -> Path:
    """logs/training-router-vX.Y.Z.json: the version, its data, metrics, gate decision and timings."""
    keys = ("accuracy", "macro_f1", "weighted_f1", "coverage", "answered_accuracy", "uncertain_rate", "ece",
            "oos_recall", "inscope_accuracy_at_threshold", "rows")
    report = {
        "version": result.version, "semver": result.semver, "run_id": result.run_id, "lifecycle": result.lifecycle,
        "created_at": store.utcnow().isoformat(), "model_name": settings.model_name,
        "gate": {"passed": result.gate.passed, "reasons": result.gate.reasons}, "shadow": result.shadow,
        "threshold": result.threshold,
        "info": {k: v for k, v in info.items() if k != "drift_reference"},  # that one: drift_reference.json
        "data": {**data, "marked_rows": result.marked_rows},
        "metrics": {s: {k: result.metrics[f"{s}_{k}"] for k in keys if f"{s}_{k}" in result.metrics} for s in SLICES},
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }
    return write_report(settings, f"training-router-v{result.semver}.json", report)


def evaluate(settings: Settings, model_uri: str, source: str = "db") -> dict[str, Any]:
    """Score a model URI and @production on the same rows (the test split if the data has one); logs a run."""
    import mlflow

    frame, where = load_examples(settings, source)
    frame, _ = collapse_copies(frame)
    has_test = (frame["split"] == "test").fillna(False)
    rows = frame[has_test].reset_index(drop=True) if has_test.any() else frame
    if rows.empty:
        raise InputError(f"no labelled rows to evaluate on in {where}")
    candidate = loading.load_router(model_uri, settings.tracking_uri)
    production = loading.load_alias(settings, PRODUCTION)
    recent = recent_mask(rows, settings.recent_days) if len(rows) else np.zeros(0, dtype=bool)
    comparison = compare(candidate, production[1] if production else None, rows, recent, settings)
    metrics = {key.replace("baseline_", "production_"): _headline(values)
               for key, values in comparison.metrics.items()}
    decision = comparison.decision
    production_version = str(production[0].version) if production else None
    tags = {"kind": "evaluation", "model_uri": model_uri, "production_version": production_version or "none",
            "gate": "passed" if decision.passed else "failed", "gate_reasons": "; ".join(decision.reasons)[:4900]}
    with tracking.tracked_run(settings, "eval-" + time.strftime("%Y%m%d_%H%M%S", time.gmtime()), tags) as run:
        tracking.log_new_params(run, {"source": source, "rows": len(rows)})
        mlflow.log_metrics({f"{group}_{k}": v for group, values in metrics.items() for k, v in values.items()})
    return {
        "run_id": run.info.run_id, "rows": len(rows), "data": where, "production_version": production_version,
        "metrics": metrics, "gate": {"passed": decision.passed, "reasons": decision.reasons},
    }


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    """A slice's metrics without the per-label F1 scores (what a comparison logs and reports)."""
    return {k: v for k, v in metrics.items() if not k.startswith("f1_")}


def _row_id(value: Any) -> int | str | None:
    """An ml_data row id as JSON wants it (a JSONL export's rows may have none)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value) if str(value).lstrip("-").isdigit() else str(value)
