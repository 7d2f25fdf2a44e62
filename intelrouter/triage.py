"""Triage (seed 004's daily capture): auto-approve trusted confident predictions, queue the rest for review.

Every triaged query gets the key of its text (`keys.text_key`): copies of a question are reviewed once. A query
that would wait for review but whose text a human already answered is settled at once (`resolve_known_texts`).
Auto-approval is checked against the provider's measured precision (`audited`, see `intelrouter.trust`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.engine import Connection

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.groundtruth import Answer, settle_all, upsert_label
from intelrouter.jsonfiles import write_report
from intelrouter.keys import text_key
from intelrouter.names import SOURCE_PRECEDENCE, STAGING, UNCERTAIN
from intelrouter.trust import SAMPLE_UNCERTAINTY, add_audits, in_sample, paused_providers

log = logging.getLogger(__name__)

HIGH_PRIORITY, MEDIUM_PRIORITY = 2, 5  # seed 004: 2 = the model is struggling, reviewed first
HUMAN_REVIEW = ("label-studio", "override")  # sources whose label settles later copies of the same text
RESOLVED_FROM = "resolved from query "  # the reviewer note of a label copied from another query's human answer
COMPLETED = "completed"  # review_tasks.status of an answered task (review_project.COMPLETED)


def decide(confidence: float, provider: str, settings: Settings) -> tuple[str, int | None]:
    """The triage rule for one query: (review status, priority)."""
    if confidence >= settings.auto_approve_threshold and provider in settings.trusted_providers:
        return store.AUTO_APPROVED, None
    if confidence >= settings.review_threshold:
        return store.NEEDS_REVIEW, MEDIUM_PRIORITY
    return store.NEEDS_REVIEW, HIGH_PRIORITY


def fallback_approved(row: Any, settings: Settings) -> bool:
    """Whether the fallback's own answer (reported by the caller) is the one triage auto-approves: from a trusted
    provider, confident enough, and not UNCERTAIN."""
    final = getattr(row, "final_label", None)
    return bool(final and final != UNCERTAIN and row.final_provider in settings.trusted_providers and (
        row.final_confidence or 0.0) >= settings.auto_approve_threshold)


def decide_row(row: Any, settings: Settings) -> tuple[str, int | None, str, float]:
    """The rule for one captured row: (review status, priority, the label that becomes ground truth, its confidence).

    When the router fell back and the caller reported the fallback's own answer (`final_provider`, `final_label`,
    `final_confidence`), that answer is judged like a captured one: from a trusted provider and confident enough, it is
    auto-approved. Otherwise the row's own prediction is; an UNCERTAIN answer is never ground truth. An answer of
    the canary (@staging) that needs review is reviewed first (priority 2): the canary check judges it on human
    labels of its answers, and at a 10 % share it gets too few of them otherwise.
    """
    if fallback_approved(row, settings):
        return store.AUTO_APPROVED, None, row.final_label, float(row.final_confidence)
    status, priority = decide(row.confidence, row.provider, settings)
    label = row.top_label or row.predicted_label
    if status == store.AUTO_APPROVED and label == UNCERTAIN:
        status, priority = store.NEEDS_REVIEW, HIGH_PRIORITY
    if status == store.NEEDS_REVIEW and getattr(row, "variant", None) == STAGING:
        priority = HIGH_PRIORITY
    return status, priority, label, row.confidence


def audited(query_id: str, provider: str, status: str, priority: int | None, paused: set[str],
            settings: Settings) -> tuple[str, int | None, str | None]:
    """Trust measured, not assumed: an auto-approval checked against the audit sample and the provider's pause.

    Returns (status, priority, audit): audit "sample" when the query is in the random audit sample (its label is
    still auto-approved, and it also goes to review), "paused" when its provider's auto-approval is paused (it goes
    to review instead), None otherwise (unchanged)."""
    if status != store.AUTO_APPROVED:
        return status, priority, None
    if provider in paused:
        return store.NEEDS_REVIEW, MEDIUM_PRIORITY, "paused"
    if in_sample(query_id, settings.audit_rate):
        return store.NEEDS_REVIEW, MEDIUM_PRIORITY, "sample"
    return status, priority, None


@dataclass
class Resolved:
    """Queries settled from a text a human already answered, without a new task."""

    approved: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        """Queries settled."""
        return self.approved + self.rejected


def known_answers(conn: Connection, keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    """Human answers known for these text keys: key -> (label, reviewer note); label None for "none of these".

    A label from human review or an override wins (the highest-precedence source, the newest among equals) over a
    "none of these" answer on a review task of the same text."""
    m, r = store.ml_data, store.review_tasks
    keys = sorted(set(keys))
    known: dict[str, tuple[str | None, str]] = {}
    best: dict[str, tuple] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        for row in conn.execute(select(m.c.id, m.c.text_key, m.c.label, m.c.source, m.c.query_id, m.c.reviewer,
                                       m.c.updated_at).where(m.c.text_key.in_(chunk), m.c.source.in_(HUMAN_REVIEW))):
            rank = (SOURCE_PRECEDENCE[row.source], row.updated_at, row.id)
            if row.text_key not in best or rank > best[row.text_key]:
                best[row.text_key] = rank
                note = row.reviewer if (row.reviewer or "").startswith(RESOLVED_FROM) else \
                    f"{RESOLVED_FROM}{row.query_id}"
                known[row.text_key] = (row.label, note)
        nones = conn.execute(select(r.c.text_key, func.min(r.c.query_id)).where(
            r.c.text_key.in_(chunk), r.c.status == COMPLETED, r.c.human_label.is_(None)).group_by(r.c.text_key))
        for key, qid in nones:
            known.setdefault(key, (None, f"{RESOLVED_FROM}{qid}"))
    return known


def resolve_known_texts(conn: Connection, settings: Settings, rows: Sequence[Any]) -> Resolved:
    """Settle waiting queries (rows with id, text, language, text_key) whose text a human already answered: the
    same label (source label-studio, reviewer "resolved from query <id>") and approved, or rejected; no task."""
    done = Resolved()
    if not settings.resolve_known_texts or not rows:
        return done
    known = known_answers(conn, (row.text_key for row in rows))
    answers = [Answer([row], *known[row.text_key]) for row in rows if row.text_key in known]
    settle_all(conn, answers, shares=settings.split_shares)
    done.approved = sum(a.label is not None for a in answers)
    done.rejected = len(answers) - done.approved
    return done


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
    resolved_known: int = 0  # settled at once from a text a human already answered (not in needs_review)
    audit_sampled: int = 0  # auto-approved and also sent to review: the random audit of the provider
    paused_to_review: int = 0  # confident answers of a paused provider, sent to review instead
    paused_providers: list[str] = field(default_factory=list)


def triage(
    settings: Settings, since: datetime | None = None, until: datetime | None = None, batch_size: int = 2000
) -> DailyReport:
    """Triage every not-yet-triaged query in [since, until); a second run over the same window changes nothing."""
    q = store.queries
    window = [q.c.created_at >= since] if since else []
    window += [q.c.created_at < until] if until else []
    counts = {store.AUTO_APPROVED: 0, store.NEEDS_REVIEW: 0, "resolved": 0, "sample": 0, "paused": 0}
    now = store.utcnow()
    with store.connect(settings) as conn:
        paused = paused_providers(conn, settings)
        for provider in sorted(paused):
            log.warning("ALERT provider_precision: auto-approval from %s is paused (measured precision below the "
                        "floor %.0f%%): its confident answers go to review", provider,
                        100 * settings.provider_precision_floor)
        pending = conn.execute(
            select(q.c.id, q.c.text, q.c.language, q.c.predicted_label, q.c.top_label, q.c.confidence,
                   q.c.provider, q.c.uncertain, q.c.variant, q.c.final_label, q.c.final_confidence, q.c.final_provider)
            .where(q.c.review_status == store.PENDING, *window)
            .order_by(q.c.created_at)
        ).all()
        for start in range(0, len(pending), batch_size):
            _triage_batch(conn, settings, pending[start : start + batch_size], paused, counts, now)
        captured, uncertain = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((q.c.uncertain, 1), else_=0)), 0)).where(*window)
        ).one()
        waiting = store.samples_waiting(conn)
    triaged = counts[store.AUTO_APPROVED] + counts[store.NEEDS_REVIEW] + counts["resolved"]
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
        resolved_known=counts["resolved"],
        audit_sampled=counts["sample"],
        paused_to_review=counts["paused"],
        paused_providers=sorted(paused),
    )
    report.report_path = str(write_report(settings, f"daily-report-{report.date}.json", asdict(report)))
    return report


def _triage_batch(conn: Connection, settings: Settings, rows: Sequence[Any], paused: set[str],
                  counts: dict[str, int], now: datetime) -> None:
    """Decide, key and store one batch: labels, audits, statuses; then settle the texts a human already answered."""
    q = store.queries
    updates, audits, waiting = [], [], []
    for row in rows:
        status, priority, label, confidence = decide_row(row, settings)
        provider = row.final_provider if fallback_approved(row, settings) else row.provider  # whose answer it is
        status, priority, audit = audited(row.id, provider, status, priority, paused, settings)
        if status == store.AUTO_APPROVED or audit == "sample":
            upsert_label(conn, query_id=row.id, text=row.text, label=label, source="auto-approved",
                         language=row.language, confidence=confidence, shares=settings.split_shares)
        if audit:
            counts[audit] += 1
            audits.append({"query_id": row.id, "kind": store.AUDIT_SAMPLE, "provider": provider, "label": label,
                           "source": "auto-approved" if audit == "sample" else None,
                           "uncertainty": SAMPLE_UNCERTAINTY})
        key = text_key(row.text)
        updates.append({"b_id": row.id, "b_status": status, "b_priority": priority, "b_key": key})
        if status == store.NEEDS_REVIEW:
            waiting.append(SimpleNamespace(id=row.id, text=row.text, language=row.language, text_key=key))
    conn.execute(update(q).where(q.c.id == bindparam("b_id")).values(
        review_status=bindparam("b_status"), review_priority=bindparam("b_priority"), text_key=bindparam("b_key"),
        triaged_at=now), updates)
    add_audits(conn, audits)
    resolved = resolve_known_texts(conn, settings, waiting)
    counts["resolved"] += resolved.total
    counts[store.NEEDS_REVIEW] += len(waiting) - resolved.total
    counts[store.AUTO_APPROVED] += len(rows) - len(waiting)
