"""Pull: the answers given in Label Studio since the last pull become ground truth; queries approved or rejected.

An answer fans out to every query of its task (the copies of one question, `review_push`): each gets the label in
`ml_data` and its review status, and copies settled earlier from it follow a corrected label.

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
from intelrouter.triage import RESOLVED_FROM

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
    disagreements: int = 0  # approved with another label than the guess the task showed
    queries: int = 0  # queries the stored answers settled (each answer fans out to every query of its task)
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
    """Store one page of answers in one transaction, each fanned out to every query of its task: ml_data, the
    queries' statuses (`groundtruth.settle_all`), their review_tasks rows."""
    q, r = store.queries, store.review_tasks
    ledger_cols = (r.c.query_id, r.c.task_id, r.c.status, r.c.annotation_id, r.c.completed_at, r.c.human_label)
    with store.connect(settings) as conn:
        members: dict[int, list[Any]] = {}
        for row in conn.execute(select(*ledger_cols).where(r.c.project_id == project_id,
                                                           r.c.task_id.in_([a.task_id for a in answers]))):
            members.setdefault(row.task_id, []).append(row)
        # a task this database never recorded (pushed before a restore from backup, say): its query is adopted
        strays = [a.query_id for a in answers if a.task_id not in members]
        held = {row.query_id: row for row in conn.execute(
            select(*ledger_cols).where(r.c.project_id == project_id, r.c.query_id.in_(strays)))}
        ids = {row.query_id for rows in members.values() for row in rows} | set(strays)
        queries = {row.id: row for row in conn.execute(
            select(q.c.id, q.c.text, q.c.language, q.c.predicted_label, q.c.top_label, q.c.text_key)
            .where(q.c.id.in_(ids)))}
        updates: list[dict[str, Any]] = []
        settled: list[groundtruth.Answer] = []
        corrected: list[tuple[list[Any], str]] = []
        for answer in answers:
            if answer.task_id in members:
                ledger = [(row.query_id, row) for row in members[answer.task_id] if row.query_id in queries]
            elif answer.query_id in queries:
                ledger = [(answer.query_id, held.get(answer.query_id))]
            else:
                result.unknown += 1
                continue
            todo = [(queries[qid], row) for qid, row in ledger if not _already_pulled(row, answer)]
            if not todo:
                result.unchanged += 1
                continue
            if limit is not None and result.written >= limit:
                break
            settled.append(groundtruth.Answer([query for query, _ in todo], answer.label, answer.reviewer,
                                              answer.status == SKIPPED))
            _count(result, answer, queries.get(answer.query_id, todo[0][0]), len(todo))
            changed = [query for query, row in todo if row is not None and row.human_label not in (None, answer.label)]
            if changed and answer.label is not None:
                corrected.append((changed, answer.label))
            for query, _ in todo:
                values = _ledger_values(query, answer)
                if answer.task_id in members or query.id in held:
                    updates.append(values)
                else:
                    conn.execute(r.insert().values(project_id=project_id, text_key=query.text_key, **values))
                    held[query.id] = None  # a second task for the same query updates, not re-inserts
        groundtruth.settle_all(conn, settled, shares=settings.split_shares)
        for queries_changed, label in corrected:
            _follow_correction(conn, queries_changed, label)
        if updates:
            names = [k for k in updates[0] if k != "query_id"]
            stmt = (
                update(r)
                .where(r.c.query_id == bindparam("qid"), r.c.project_id == project_id)
                .values(**{k: bindparam(f"v_{k}") for k in names})
            )
            conn.execute(stmt, [{"qid": row["query_id"], **{f"v_{k}": row[k] for k in names}} for row in updates])


def _already_pulled(held: Any, answer: _Answer) -> bool:
    return (
        held is not None
        and held.status in (COMPLETED, SKIPPED)
        and held.annotation_id == answer.annotation_id
        and held.completed_at == answer.completed_at
    )


def _count(result: PullResult, answer: _Answer, shown: Any, queries: int) -> None:
    """Count one answer (and the queries it settled); a disagreement is judged on the guess the task showed."""
    result.queries += queries
    if answer.status == SKIPPED:
        result.skipped += 1
    elif answer.none_of_these:
        result.rejected += 1
    else:
        result.approved += 1
        result.disagreements += 0 if answer.label == guess(shown) else 1


def _follow_correction(conn: Connection, queries: Sequence[Any], label: str) -> None:
    """Copies settled earlier from these queries' answer (triage.resolve_known_texts) follow a corrected label."""
    m = store.ml_data
    keys = {query.text_key for query in queries if query.text_key}
    if not keys:
        return
    notes = [f"{RESOLVED_FROM}{query.id}" for query in queries]
    conn.execute(update(m).where(m.c.text_key.in_(keys), m.c.source == "label-studio", m.c.reviewer.in_(notes),
                                 m.c.label != label)
                 .values(label=label, updated_at=store.utcnow(), trained_version=None))


def _ledger_values(query: Any, answer: _Answer) -> dict[str, Any]:
    """The review_tasks values one answered query gets."""
    agrees = None if answer.status == SKIPPED else answer.label is not None and answer.label == guess(query)
    return {
        "query_id": query.id, "task_id": answer.task_id, "status": answer.status,
        "annotation_id": answer.annotation_id, "human_label": answer.label, "reviewer": answer.reviewer,
        "agrees_with_model": agrees, "comment": answer.comment, "completed_at": answer.completed_at,
        "updated_at": store.utcnow(),
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

