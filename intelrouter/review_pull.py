"""Pull: the answers given in Label Studio since the last pull become ground truth; queries approved or rejected.

A pull commits one page of answers per transaction and skips answers it already holds, so it is safe to repeat
and to interrupt; it re-reads a little before the newest answer it holds (see PULL_OVERLAP).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from intelrouter import groundtruth, store
from intelrouter.config import Settings
from intelrouter.labelstudio import LabelStudioClient, parse_time
from intelrouter.review_project import (
    BATCH_SIZE,
    COMMENT_NAME,
    COMPLETED,
    FROM_NAME,
    NONE_CHOICE,
    QUICK_NAME,
    SKIPPED,
    guess,
    project_id_of,
    session,
)

# A pull re-reads tasks changed this long before the newest answer it holds: Label Studio stamps a task
# a few ms apart from its annotation, and commits may land out of order. Re-read answers are skipped.
PULL_OVERLAP = timedelta(minutes=10)

T = TypeVar("T")


@dataclass
class PullResult:
    """What a pull did."""

    project_id: int
    fetched: int = 0  # annotated tasks read from Label Studio
    approved: int = 0  # human label written to ml_data, query approved
    rejected: int = 0  # "none of these": query rejected
    skipped: int = 0  # reviewer skipped the task: query rejected
    disagreements: int = 0  # approved with another label than the model's guess
    unchanged: int = 0  # answers already pulled
    unknown: int = 0  # tasks whose query id is not in this database

    @property
    def written(self) -> int:
        """Answers stored by this pull."""
        return self.approved + self.rejected + self.skipped


@dataclass
class _Answer:
    query_id: str
    task_id: int
    annotation_id: int
    label: str | None  # None when skipped or "none of these"
    status: str  # COMPLETED or SKIPPED
    none_of_these: bool
    reviewer: str | None
    comment: str | None
    completed_at: datetime | None


def _answer(task: dict[str, Any], reviewers: dict[int, str]) -> _Answer | None:
    """The human answer on a task: the newest submitted annotation, else the newest skip."""
    qid = (task.get("data") or {}).get("query_id")
    annotations = sorted(task.get("annotations") or [], key=lambda a: a["id"])
    if not qid or not annotations:
        return None
    submitted = [a for a in annotations if not a.get("was_cancelled")]
    ann = submitted[-1] if submitted else annotations[-1]
    picks, comments = {}, []
    for item in ann.get("result") or []:
        value = item.get("value") or {}
        if item.get("from_name") in (FROM_NAME, QUICK_NAME) and value.get("choices"):
            picks[item["from_name"]] = value["choices"][0]
        elif item.get("from_name") == COMMENT_NAME and value.get("text"):
            comments.extend(str(t) for t in value["text"])
    label = picks.get(FROM_NAME) or picks.get(QUICK_NAME)  # the full list wins over the quick picks
    cancelled = bool(ann.get("was_cancelled")) or label is None  # submitted without a choice: a skip
    none_of_these = not cancelled and label == NONE_CHOICE
    when = ann.get("updated_at") or ann.get("created_at")
    completed_by = ann.get("completed_by")
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("id")
    return _Answer(
        query_id=str(qid),
        task_id=int(task["id"]),
        annotation_id=int(ann["id"]),
        label=None if cancelled or none_of_these else label,
        status=SKIPPED if cancelled else COMPLETED,
        none_of_these=none_of_these,
        reviewer=reviewers.get(completed_by, str(completed_by)) if completed_by is not None else None,
        comment="\n".join(comments) or None,
        completed_at=parse_time(when) if when else None,
    )


def _watermark(settings: Settings, project_id: int) -> datetime | None:
    """Re-read from a little before the newest answer already pulled (None: read everything)."""
    r = store.review_tasks
    with store.connect(settings) as conn:
        newest = conn.execute(
            select(func.max(r.c.completed_at)).where(r.c.project_id == project_id, r.c.status.in_([COMPLETED, SKIPPED]))
        ).scalar()
    return newest - PULL_OVERLAP if newest else None


def _apply(
    settings: Settings, project_id: int, answers: Sequence[_Answer], result: PullResult, limit: int | None
) -> None:
    """Store one page of answers in one transaction: ml_data, the query's status, the review_tasks row."""
    q, r = store.queries, store.review_tasks
    ids = [a.query_id for a in answers]
    statuses: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with store.connect(settings) as conn:
        queries = {
            row.id: row
            for row in conn.execute(
                select(q.c.id, q.c.text, q.c.language, q.c.predicted_label, q.c.top_label).where(q.c.id.in_(ids))
            )
        }
        ledger = {
            row.query_id: row
            for row in conn.execute(
                select(r.c.query_id, r.c.status, r.c.annotation_id, r.c.completed_at).where(
                    r.c.project_id == project_id, r.c.query_id.in_(ids)
                )
            )
        }
        for answer in answers:
            query = queries.get(answer.query_id)
            if query is None:
                result.unknown += 1
            elif _already_pulled(ledger.get(answer.query_id), answer):
                result.unchanged += 1
            elif limit is not None and result.written >= limit:
                break
            else:
                row = _store_answer(conn, query, answer, result, settings.split_shares)
                statuses.append({"qid": query.id, "review_status": row.pop("query_status")})
                if answer.query_id in ledger:
                    rows.append(row)
                else:  # a task this database never recorded (pushed before a restore from backup, say): adopt it
                    conn.execute(r.insert().values(project_id=project_id, **row))
                    ledger[answer.query_id] = None  # a second task for the same query updates, not re-inserts
        if statuses:
            conn.execute(update(q).where(q.c.id == bindparam("qid")).values(review_status=bindparam("review_status")),
                         statuses)
        if rows:
            names = [k for k in rows[0] if k != "query_id"]
            stmt = (
                update(r)
                .where(r.c.query_id == bindparam("qid"), r.c.project_id == project_id)
                .values(**{k: bindparam(f"v_{k}") for k in names})
            )
            conn.execute(stmt, [{"qid": row["query_id"], **{f"v_{k}": row[k] for k in names}} for row in rows])


def _already_pulled(held: Any, answer: _Answer) -> bool:
    return (
        held is not None
        and held.status in (COMPLETED, SKIPPED)
        and held.annotation_id == answer.annotation_id
        and held.completed_at == answer.completed_at
    )


def _store_answer(conn: Connection, query: Any, answer: _Answer, result: PullResult, shares: tuple[float, float]
                  ) -> dict[str, Any]:
    """Write the label (if any) to ml_data and count the answer; returns the review_tasks values to store."""
    agrees = None if answer.status == SKIPPED else answer.label is not None and answer.label == guess(query)
    if answer.label is not None:
        groundtruth.upsert_label(
            conn, query_id=query.id, text=query.text, label=answer.label, source="label-studio",
            language=query.language, reviewer=answer.reviewer, shares=shares,
        )
    if answer.status == SKIPPED:
        result.skipped += 1
    elif answer.none_of_these:
        result.rejected += 1
    else:
        result.approved += 1
        result.disagreements += 0 if agrees else 1
    return {
        "query_id": query.id, "task_id": answer.task_id, "status": answer.status,
        "annotation_id": answer.annotation_id, "human_label": answer.label, "reviewer": answer.reviewer,
        "agrees_with_model": agrees, "comment": answer.comment, "completed_at": answer.completed_at,
        "updated_at": store.utcnow(),
        "query_status": store.APPROVED if answer.label is not None else store.REJECTED,
    }


def _prefetched(pages: Iterator[T]) -> Iterator[T]:
    """Fetch the next page in a thread while the caller stores this one: Label Studio and the store overlap.

    Pages still arrive, and are committed, in order; an error while fetching is raised where the page would be.
    """
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not put(("page", page)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    worker = threading.Thread(target=fetch, name="labelstudio-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()  # the client is not shared across threads: wait for an in-flight request


def pull(
    settings: Settings,
    limit: int | None = None,
    project_id: int | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    client: LabelStudioClient | None = None,
) -> PullResult:
    """Fetch answers given since the last pull and store them: labels to ml_data, queries approved/rejected."""
    pid = project_id_of(settings, project_id)
    with session(settings, client) as ls:
        ls.get_project(pid)
        reviewers = ls.users()
        result = PullResult(pid)
        for page in _prefetched(ls.annotated_tasks(pid, since=_watermark(settings, pid), page_size=batch_size)):
            answers = [a for a in (_answer(task, reviewers) for task in page) if a is not None]
            result.fetched += len(page)
            _apply(settings, pid, answers, result, limit)
            if limit is not None and result.written >= limit:
                break
    return result

