"""Before the canary: a candidate that passed the gate answers recent captured traffic beside @production.

The training job calls `shadow` between the gate and registration. It reads the last `shadow_days` of the
`queries` table (newest first, at most `shadow_max_queries`), scores the candidate on every text, and takes
@production's answers from the log where @production served the query itself (`variant` production,
`model_version` its version: `predicted_label` and `confidence` are what it answered); only the other rows —
the canary's, older versions', imported captures' — are scored with @production, loaded only when there are
any. `intelrouter.shadow` compares the two and its `limits` decide: a candidate held by them stays in
testing (`lifecycle.apply_gate(hold=...)`) with the reasons in a version tag, and never reaches @staging.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import and_, select

from intelrouter import loading, store
from intelrouter.config import Settings
from intelrouter.model import Router
from intelrouter.names import PRODUCTION
from intelrouter.shadow import Answers, ShadowReport, ShadowRules, answers, compare, limits, not_judged

Status = Literal["passed", "held", "not judged", "skipped"]


@dataclass(frozen=True)
class RecentTraffic:
    """The captured queries a candidate is replayed on, newest first, with @production's logged answers."""

    texts: list[str]
    served: np.ndarray  # bool: @production answered this query itself, its answer is in the log
    labels: np.ndarray  # the logged answer (UNCERTAIN below threshold); meaningful where `served`
    confidences: np.ndarray  # the logged top confidence; meaningful where `served`
    since: datetime
    until: datetime


@dataclass(frozen=True)
class ShadowVerdict:
    """The shadow step's outcome: the report, and whether its limits hold the candidate in testing."""

    status: Status
    reasons: list[str] = field(default_factory=list)  # why it is held (status "held")
    note: str | None = None  # why there was no replay or no verdict
    report: ShadowReport | None = None
    production_version: str | None = None
    logged_rows: int = 0  # rows whose @production answer came from the query log
    since: str | None = None
    until: str | None = None
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        """Whether the limits keep the candidate in testing."""
        return self.status == "held"

    def tags(self) -> dict[str, str]:
        """Version tags: the verdict, its reasons or note, and the report's `shadow_*` numbers."""
        tags = {"shadow": self.status, "shadow_reasons": "; ".join(self.reasons) or self.note or ""}
        if self.report is not None:
            tags |= self.report.as_tags() | {"shadow_production_version": str(self.production_version),
                                             "shadow_logged_rows": str(self.logged_rows)}
        return tags

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the run's shadow.json, the training report)."""
        out = asdict(self)
        out["report"] = self.report.as_dict() if self.report is not None else None
        return out


def recent_traffic(settings: Settings, production_version: str, now: datetime | None = None) -> RecentTraffic:
    """The last `shadow_days` of captured queries (newest first, at most `shadow_max_queries`) and which of them
    @production answered itself."""
    q = store.queries
    until = now or store.utcnow()
    since = until - timedelta(days=settings.shadow_days)
    served = and_(q.c.variant == PRODUCTION, q.c.model_version == str(production_version))
    with store.connect(settings) as conn:
        rows = conn.execute(
            select(q.c.text, served.label("served"), q.c.predicted_label, q.c.confidence)
            .where(q.c.created_at >= since, q.c.created_at <= until)
            .order_by(q.c.created_at.desc(), q.c.id).limit(settings.shadow_max_queries)
        ).all()
    texts, flags, labels, confidences = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
    return RecentTraffic(texts, np.array([bool(f) for f in flags], dtype=bool), np.array(labels, dtype=object),
                         np.array(confidences, dtype=np.float64), since, until)


def replay_recent(traffic: RecentTraffic, candidate: Router, production: Callable[[], Router]) -> ShadowReport:
    """The shadow report of the candidate on recent traffic; @production is loaded (`production()`) and scored only
    when some rows were not its own answers."""
    labels, confidences = traffic.labels.copy(), traffic.confidences.copy()
    rest = np.flatnonzero(~traffic.served)
    if len(rest):
        scored = answers(production(), [traffic.texts[i] for i in rest])
        labels[rest], confidences[rest] = scored.labels, scored.confidences
    return compare(answers(candidate, traffic.texts), Answers(labels, confidences))


def shadow(settings: Settings, candidate: Router, production_version: str | None, passed: bool = True,
           now: datetime | None = None, production: Callable[[], Router] | None = None) -> ShadowVerdict:
    """Replay a candidate that passed the gate on recent traffic against @production and apply the limits."""
    if not passed:
        return ShadowVerdict("skipped", note="the gate failed: no shadow replay")
    if production_version is None:
        return ShadowVerdict("skipped", note="no @production to replay against (a first model)")
    started = time.perf_counter()
    traffic = recent_traffic(settings, production_version, now)
    window = {"production_version": str(production_version), "since": traffic.since.isoformat(timespec="seconds"),
              "until": traffic.until.isoformat(timespec="seconds")}
    if not traffic.texts:
        return ShadowVerdict("not judged", note=f"no captured queries in the last {settings.shadow_days} days: "
                             "limits not judged", **window, seconds=time.perf_counter() - started)
    report = replay_recent(traffic, candidate,
                           production or (lambda: loading.load_version(settings, production_version)))
    rules = ShadowRules.from_settings(settings)
    note, reasons = not_judged(report, rules), limits(report, rules)
    status: Status = "not judged" if note else "held" if reasons else "passed"
    return ShadowVerdict(status, reasons, note, report, logged_rows=int(traffic.served.sum()), **window,
                         seconds=time.perf_counter() - started)


def log_on_run(verdict: ShadowVerdict, drift_reference: dict[str, Any] | None = None) -> None:
    """Log the verdict on the active MLflow run (tags, `shadow_*` metrics, shadow.json) and the drift reference
    stored with the model (drift_reference.json)."""
    import mlflow

    mlflow.set_tags({"shadow": verdict.status, "shadow_reasons": verdict.tags()["shadow_reasons"][:4900]})
    report = verdict.report
    if report is not None:
        mlflow.log_metrics({
            "shadow_rows": report.rows, "shadow_logged_rows": verdict.logged_rows,
            "shadow_agreement": report.agreement, "shadow_uncertain_rate": report.candidate_uncertain_rate,
            "shadow_production_uncertain_rate": report.production_uncertain_rate,
            "shadow_uncertain_change": report.uncertain_change,
            "shadow_estimated_accuracy": report.candidate_estimate,
            "shadow_production_estimated_accuracy": report.production_estimate,
            "shadow_estimate_change": report.estimate_change, "shadow_seconds": verdict.seconds,
        })
    mlflow.log_dict(verdict.as_dict(), "shadow.json")
    if drift_reference is not None:
        mlflow.log_dict(drift_reference, "drift_reference.json")


def version_shadow(tags: dict[str, str]) -> dict[str, str]:
    """The shadow verdict and numbers among a version's tags (what the canary decision log carries)."""
    return {k: v for k, v in sorted(tags.items()) if k.startswith("shadow") or k == "hold_reasons"}
