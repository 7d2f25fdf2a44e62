"""What the store holds right now: counts by table and review status, the last triage, the backlog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from intelrouter import store
from intelrouter.config import Settings


def collect_status(settings: Settings) -> dict[str, Any]:
    """Counts by table and status, the last triage time, what waits for review, unused approved samples."""
    q, m, r = store.queries, store.ml_data, store.review_tasks
    with store.connect(settings) as conn:
        by_status = dict(conn.execute(select(q.c.review_status, func.count()).group_by(q.c.review_status)).all())
        by_source = dict(conn.execute(select(m.c.source, func.count()).group_by(m.c.source)).all())
        tasks = dict(conn.execute(select(r.c.status, func.count()).group_by(r.c.status)).all())
        last_triage = conn.execute(select(func.max(q.c.triaged_at))).scalar()
        unused = store.samples_waiting(conn)
    return {
        "database": store.safe_url(settings),
        "queries": sum(by_status.values()),
        "queries_by_review_status": by_status,
        "ml_data": sum(by_source.values()),
        "ml_data_by_source": by_source,
        "review_tasks": sum(tasks.values()),
        "review_tasks_by_status": tasks,
        "last_triage": last_triage.isoformat(timespec="seconds") if last_triage else None,
        "waiting_for_review": by_status.get(store.NEEDS_REVIEW, 0),
        "approved_unused": int(unused),
    }
