"""The teacher audit: before each training, labels no human gave are checked for likely errors, with cleanlab.

Out-of-fold probabilities come from the training pipeline itself: its text features, fitted once on every row
(unsupervised), and its classifier, fitted `audit_folds` times by stratified k-fold (the optional static block is
left out to keep the audit cheap). `cleanlab.filter.find_label_issues` then flags the rows whose label the others
contradict. Only auto-approved and feedback labels can be flagged: human labels (label-studio, override) and
imports are never dropped, though they inform the probabilities. A flagged row sits out this training (train and
validation rows; a test row stays, since removing the rows the model disagrees with would flatter the score) and
its query goes to review at priority 2, once (`audits` remembers it: a second flag re-queues nothing).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select, update

from intelrouter import store
from intelrouter.classifiers import make_classifier
from intelrouter.config import Settings
from intelrouter.data import Splits
from intelrouter.features import TextFeatures
from intelrouter.trust import add_audits

AUDITED_SOURCES = ("auto-approved", "feedback")
HIGH_PRIORITY = 2  # triage.HIGH_PRIORITY: a suspected label error is reviewed first
EXAMPLES = 200  # flagged rows written to the run's audit/flagged.csv


@dataclass
class AuditResult:
    """What one audit checked and found."""

    enabled: bool
    folds: int = 0
    checked: int = 0  # rows whose label was audited (auto-approved, feedback)
    flagged: int = 0
    excluded: int = 0  # flagged rows left out of this training (train and validation)
    queued: int = 0  # their queries sent to review now
    seconds: float = 0.0
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> checked, flagged
    skipped: str | None = None  # why nothing was checked
    examples: pd.DataFrame = field(default_factory=pd.DataFrame)  # the flagged rows, most suspect first
    excluded_keys: set[str] = field(default_factory=set)  # text keys of the rows left out

    def summary(self) -> dict[str, Any]:
        """Counts and shares, JSON-ready (the run's audit/summary.json)."""
        share = {s: round(v["flagged"] / v["checked"], 4) if v["checked"] else 0.0 for s, v in self.by_source.items()}
        return {"enabled": self.enabled, "folds": self.folds, "checked": self.checked, "flagged": self.flagged,
                "excluded": self.excluded, "queued": self.queued, "seconds": round(self.seconds, 2),
                "by_source": self.by_source, "flagged_share": share, "skipped": self.skipped}


def out_of_fold(texts: list[str], labels: np.ndarray, params: dict[str, Any], classifier: str, C: float,
                folds: int, random_state: int) -> np.ndarray:
    """Out-of-fold class probabilities (rows x sorted classes) of the pipeline: features fitted once, the
    classifier cross-validated by stratified k-fold."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = TextFeatures(**{k: v for k, v in params.items() if k not in ("static", "static_weight")}).fit_transform(texts)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cross_val_predict(make_classifier(classifier, C=C, random_state=random_state), x, labels, cv=cv,
                                 method="predict_proba")


def find_issues(frame: pd.DataFrame, settings: Settings, params: dict[str, Any], classifier: str, C: float,
                random_state: int) -> tuple[pd.DataFrame, int]:
    """The likely label errors among the frame's auto-approved and feedback rows, most suspect first (columns of
    the frame plus `suggested` and `quality`, the out-of-fold probability of the given label); and how many rows
    were checked."""
    from cleanlab.filter import find_label_issues

    folds = settings.audit_folds
    sizes = frame["label"].value_counts()
    judged = frame[frame["label"].isin(sizes[sizes >= folds].index)].reset_index(drop=True)  # rarer: no verdict
    audited = judged["source"].isin(AUDITED_SOURCES).to_numpy()
    if not audited.any() or judged["label"].nunique() < 2:
        return judged.iloc[:0].assign(suggested=[], quality=[]), int(audited.sum())
    classes, y = np.unique(judged["label"].to_numpy(dtype=object), return_inverse=True)
    probs = out_of_fold(judged["text"].tolist(), y, params, classifier, C, folds, random_state)
    issues = find_label_issues(y, probs, filter_by="prune_by_noise_rate", n_jobs=1) & audited
    quality = probs[np.arange(len(y)), y]
    flagged = judged[issues].assign(suggested=classes[probs[issues].argmax(axis=1)], quality=quality[issues])
    return flagged.sort_values("quality", kind="stable").reset_index(drop=True), int(audited.sum())


def screen(frame: pd.DataFrame, splits: Splits, settings: Settings, params: dict[str, Any], classifier: str,
           C: float, random_state: int) -> tuple[Splits, AuditResult]:
    """Audit the labels no human gave; the splits without the flagged train and validation rows, and the result."""
    if not settings.audit_labels:
        return splits, AuditResult(False, skipped="off (INTELROUTER_AUDIT_LABELS=false)")
    checked_by = Counter(frame.loc[frame["source"].isin(AUDITED_SOURCES), "source"])
    if not checked_by:
        return splits, AuditResult(True, settings.audit_folds, skipped="no auto-approved or feedback labels")
    started = time.perf_counter()
    flagged, checked = find_issues(frame, settings, params, classifier, C, random_state)
    keys = set(flagged["text_key"])
    kept = Splits(splits.train[~splits.train["text_key"].isin(keys)].reset_index(drop=True),
                  splits.val[~splits.val["text_key"].isin(keys)].reset_index(drop=True), splits.test, splits.how)
    flagged_by = Counter(flagged["source"])
    excluded = keys - set(splits.test["text_key"])
    result = AuditResult(
        True, settings.audit_folds, checked=checked, flagged=len(flagged), excluded=len(excluded),
        excluded_keys=excluded,
        seconds=time.perf_counter() - started, examples=flagged,
        by_source={s: {"checked": int(n), "flagged": int(flagged_by.get(s, 0))} for s, n in sorted(checked_by.items())},
    )
    return kept, result


def send_to_review(settings: Settings, result: AuditResult) -> int:
    """Queue the flagged rows' queries for review at priority 2 (rows from an import have none); a query flagged
    before, or already in review, is not queued again. Returns how many were queued now."""
    if result.examples.empty:
        return 0
    m, q, r = store.ml_data, store.queries, store.review_tasks
    flagged = result.examples
    ids = [int(i) for i in flagged["id"].dropna() if str(i).lstrip("-").isdigit()]
    with store.connect(settings) as conn:
        owners: dict[int, Any] = {}
        for start in range(0, len(ids), 1000):
            for row in conn.execute(select(m.c.id, m.c.query_id, q.c.provider).select_from(m)
                                    .join(q, q.c.id == m.c.query_id).where(m.c.id.in_(ids[start : start + 1000]))):
                owners[int(row.id)] = row
        rows = [{"query_id": owners[int(row.id)].query_id, "kind": store.LABEL_ISSUE,
                 "provider": owners[int(row.id)].provider, "source": row.source, "label": row.label,
                 "uncertainty": round(1.0 - float(row.quality), 6)}
                for row in flagged.itertuples() if _int(row.id) in owners]
        new = sorted(add_audits(conn, rows))
        queued = 0
        for start in range(0, len(new), 1000):
            chunk = new[start : start + 1000]
            queued += conn.execute(
                update(q).where(q.c.id.in_(chunk), q.c.id.not_in(select(r.c.query_id).where(r.c.query_id.in_(chunk))))
                .values(review_status=store.NEEDS_REVIEW, review_priority=HIGH_PRIORITY)
            ).rowcount
    result.queued = queued
    return queued


def _int(value: Any) -> int | None:
    return int(value) if value is not None and str(value).lstrip("-").isdigit() else None


def log_to_run(result: AuditResult | None) -> None:
    """Counts, the share flagged per source and the flagged examples on the active MLflow run."""
    import mlflow

    if result is None:
        return
    summary = result.summary()
    mlflow.log_params({"audit.enabled": result.enabled, "audit.folds": result.folds,
                       "audit.skipped": result.skipped or "no"})
    metrics = {f"audit_{k}": float(summary[k]) for k in ("checked", "flagged", "excluded", "queued", "seconds")}
    for source, counts in result.by_source.items():
        metrics[f"audit_checked.{source}"] = float(counts["checked"])
        metrics[f"audit_flagged.{source}"] = float(counts["flagged"])
        metrics[f"audit_flagged_share.{source}"] = float(summary["flagged_share"][source])
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        columns = [c for c in ("id", "text", "label", "suggested", "quality", "source", "split", "created_at")
                   if c in result.examples.columns]
        result.examples.head(EXAMPLES)[columns].to_csv(out / "flagged.csv", index=False)
        mlflow.log_artifacts(str(out), "audit")
