"""Triage (seed 004's daily capture): auto-approve trusted confident predictions, queue the rest for review."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.groundtruth import upsert_label
from intelrouter.jsonfiles import write_report
from intelrouter.names import STAGING, UNCERTAIN

HIGH_PRIORITY, MEDIUM_PRIORITY = 2, 5  # seed 004: 2 = the model is struggling, reviewed first


def decide(confidence: float, provider: str, settings: Settings) -> tuple[str, int | None]:
    """The triage rule for one query: (review status, priority)."""
    if confidence >= settings.auto_approve_threshold and provider in settings.trusted_providers:
        return store.AUTO_APPROVED, None
    if confidence >= settings.review_threshold:
        return store.NEEDS_REVIEW, MEDIUM_PRIORITY
    return store.NEEDS_REVIEW, HIGH_PRIORITY


def decide_row(row: Any, settings: Settings) -> tuple[str, int | None, str, float]:
    """The rule for one captured row: (review status, priority, the label that becomes ground truth, its confidence).

    When the router fell back and the caller reported the fallback's own answer (`final_provider`, `final_label`,
    `final_confidence`), that answer is judged like a captured one: from a trusted provider and confident enough, it is
    auto-approved. Otherwise the row's own prediction is; an UNCERTAIN answer is never ground truth. An answer of
    the canary (@staging) that needs review is reviewed first (priority 2): the canary check judges it on human
    labels of its answers, and at a 10 % share it gets too few of them otherwise.
    """
    final = getattr(row, "final_label", None)
    if final and final != UNCERTAIN and row.final_provider in settings.trusted_providers and (
            row.final_confidence or 0.0) >= settings.auto_approve_threshold:
        return store.AUTO_APPROVED, None, final, float(row.final_confidence)
    status, priority = decide(row.confidence, row.provider, settings)
    label = row.top_label or row.predicted_label
    if status == store.AUTO_APPROVED and label == UNCERTAIN:
        status, priority = store.NEEDS_REVIEW, HIGH_PRIORITY
    if status == store.NEEDS_REVIEW and getattr(row, "variant", None) == STAGING:
        priority = HIGH_PRIORITY
    return status, priority, label, row.confidence


@dataclass
class DailyReport:
    """The numbers of one triage run, written to logs/daily-report-YYYY-MM-DD.json."""

    date: str
    since: str | None
    until: str | None
    captured: int
    triaged: int
    auto_approved: int
    needs_review: int
    approved_waiting_for_training: int
    auto_approval_rate: float
    uncertain_rate: float
    alert: bool
    report_path: str = ""


def triage(
    settings: Settings, since: datetime | None = None, until: datetime | None = None, batch_size: int = 2000
) -> DailyReport:
    """Triage every not-yet-triaged query in [since, until); a second run over the same window changes nothing."""
    q = store.queries
    window = [q.c.created_at >= since] if since else []
    window += [q.c.created_at < until] if until else []
    counts = {store.AUTO_APPROVED: 0, store.NEEDS_REVIEW: 0}
    now = store.utcnow()
    with store.connect(settings) as conn:
        pending = conn.execute(
            select(q.c.id, q.c.text, q.c.language, q.c.predicted_label, q.c.top_label, q.c.confidence,
                   q.c.provider, q.c.uncertain, q.c.variant, q.c.final_label, q.c.final_confidence, q.c.final_provider)
            .where(q.c.review_status == store.PENDING, *window)
            .order_by(q.c.created_at)
        ).all()
        for start in range(0, len(pending), batch_size):
            groups: dict[tuple[str, int | None], list[str]] = {}
            for row in pending[start : start + batch_size]:
                status, priority, label, confidence = decide_row(row, settings)
                groups.setdefault((status, priority), []).append(row.id)
                if status == store.AUTO_APPROVED:
                    upsert_label(conn, query_id=row.id, text=row.text, label=label, source="auto-approved",
                                 language=row.language, confidence=confidence, shares=settings.split_shares)
            for (status, priority), ids in groups.items():
                counts[status] += len(ids)
                conn.execute(
                    update(q).where(q.c.id.in_(ids))
                    .values(review_status=status, review_priority=priority, triaged_at=now)
                )
        captured, uncertain = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((q.c.uncertain, 1), else_=0)), 0)).where(*window)
        ).one()
        waiting = store.samples_waiting(conn)
    triaged = sum(counts.values())
    report = DailyReport(
        date=(until - timedelta(seconds=1)).date().isoformat() if until else now.date().isoformat(),
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        captured=int(captured),
        triaged=triaged,
        auto_approved=counts[store.AUTO_APPROVED],
        needs_review=counts[store.NEEDS_REVIEW],
        approved_waiting_for_training=waiting,
        auto_approval_rate=round(counts[store.AUTO_APPROVED] / triaged, 4) if triaged else 0.0,
        uncertain_rate=round(int(uncertain) / captured, 4) if captured else 0.0,
        alert=waiting >= settings.alert_waiting,
    )
    report.report_path = str(write_report(settings, f"daily-report-{report.date}.json", asdict(report)))
    return report

