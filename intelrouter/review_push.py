"""Push: queries that need review become Label Studio tasks, with the model's guess pre-selected, once each.

Label Studio does not de-duplicate, so `review_tasks` is the ledger that makes a push safe to repeat: it records
its intent (status pending) before importing and the task ids after; the next push adopts tasks an interrupted
import left behind instead of sending them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.engine import Connection

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import LabelStudioError
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.review_project import (
    BATCH_SIZE,
    PENDING,
    PUSHED,
    ensure_labels,
    guess,
    project_id_of,
    session,
)
from intelrouter.review_screen import Screen


@dataclass
class PushResult:
    """What a push did."""

    project_id: int
    selected: int = 0  # needs-review queries without a task when the push started
    pushed: int = 0  # tasks created by this push
    adopted: int = 0  # tasks an interrupted push had created, recorded now instead of sent again


def _task(row: Any, screen: Screen) -> dict[str, Any]:
    """The Label Studio task for one query: its data, the model's suggestions on top, its guess pre-selected."""
    data = {"text": row.text, "language": row.language, "priority": row.review_priority, "query_id": row.id}
    return screen.task(row, data)


def _select_for_push(conn: Connection, project_id: int, limit: int | None) -> list[Any]:
    """Needs-review queries without a task in this project: priority first (2 before 5), least confident next."""
    q, r = store.queries, store.review_tasks
    stmt = (
        select(q.c.id, q.c.text, q.c.language, q.c.review_priority, q.c.confidence, q.c.predicted_label,
               q.c.top_label, q.c.model_version, q.c.provider)
        .select_from(q.outerjoin(r, and_(r.c.query_id == q.c.id, r.c.project_id == project_id)))
        .where(q.c.review_status == store.NEEDS_REVIEW, r.c.task_id.is_(None))
        .order_by(func.coalesce(q.c.review_priority, 99), q.c.confidence, q.c.created_at, q.c.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt))


def _record_intent(settings: Settings, project_id: int, rows: Sequence[Any]) -> None:
    """Before importing: a pending review_tasks row per query, so a crash leaves a trace to reconcile."""
    now = store.utcnow()
    intents = [
        {"query_id": row.id, "project_id": project_id, "priority": row.review_priority, "status": PENDING,
         "updated_at": now}
        for row in rows
    ]
    with store.connect(settings) as conn:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(store.review_tasks).on_conflict_do_nothing(index_elements=["query_id", "project_id"])
        conn.execute(stmt, intents)


def _record_pushed(settings: Settings, project_id: int, pairs: Sequence[tuple[str, int]]) -> None:
    """After importing: the task id of each query, status pushed."""
    if not pairs:
        return
    r = store.review_tasks
    now = store.utcnow()
    stmt = (
        update(r)
        .where(r.c.query_id == bindparam("qid"), r.c.project_id == project_id)
        .values(task_id=bindparam("tid"), status=PUSHED, pushed_at=now, updated_at=now)
    )
    with store.connect(settings) as conn:
        conn.execute(stmt, [{"qid": qid, "tid": tid} for qid, tid in pairs])


def reconcile(settings: Settings, ls: LabelStudioClient, project_id: int) -> int:
    """Adopt tasks an interrupted push created but did not record; returns how many were adopted."""
    r = store.review_tasks
    with store.connect(settings) as conn:
        pending = set(
            conn.execute(select(r.c.query_id).where(r.c.project_id == project_id, r.c.task_id.is_(None))).scalars()
        )
        if not pending:
            return 0
        known = conn.execute(select(func.max(r.c.task_id)).where(r.c.project_id == project_id)).scalar() or 0
    found: dict[str, int] = {}
    # Task ids only grow and every recorded task is older than any unrecorded one: list only the newer.
    for page in ls.iter_tasks(project_id, after_id=int(known), page_size=5000):
        for task in page:
            qid = (task.get("data") or {}).get("query_id")
            if qid in pending and qid not in found:
                found[qid] = int(task["id"])
    _record_pushed(settings, project_id, list(found.items()))
    return len(found)


def push(
    settings: Settings,
    limit: int | None = None,
    project_id: int | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    client: LabelStudioClient | None = None,
) -> PushResult:
    """Send needs-review queries as tasks with the model's guess pre-selected; only what is not there yet."""
    pid = project_id_of(settings, project_id)
    with session(settings, client) as ls:
        project = ls.get_project(pid)
        result = PushResult(pid, adopted=reconcile(settings, ls, pid))
        with store.connect(settings) as conn:
            rows = _select_for_push(conn, pid, limit)
        result.selected = len(rows)
        ensure_labels(ls, project, {g for g in map(guess, rows) if g})
        screen = Screen(settings)  # loads each model version once for the whole push
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            screen.prepare(batch)
            _record_intent(settings, pid, batch)
            try:
                ids = ls.import_tasks(pid, [_task(row, screen) for row in batch])
            except LabelStudioError as exc:
                raise type(exc)(
                    f"push stopped after {result.pushed} of {len(rows)} tasks: {exc}. "
                    "Run it again: it adopts what landed and sends the rest, without duplicates"
                ) from None
            _record_pushed(settings, pid, [(row.id, tid) for row, tid in zip(batch, ids, strict=True)])
            result.pushed += len(batch)
    return result

