"""Human review in Label Studio: set up the project, push queries that need review, pull the answers.

Label Studio does not de-duplicate, so `review_tasks` is the ledger that makes every step safe to repeat:
a push records its intent (status pending) before importing and the task ids after; the next push adopts
tasks an interrupted import left behind instead of sending them again. A pull commits one batch per
transaction and skips answers it already holds.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import quoteattr

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.engine import Connection

from intelrouter import groundtruth, store
from intelrouter.config import Settings
from intelrouter.errors import ConfigError, InsufficientDataError, LabelStudioError
from intelrouter.labelstudio import LabelStudioClient, parse_time

PROJECT_TITLE = "IntelRouter review"
PROJECT_DESCRIPTION = (
    "Queries the router was unsure about. Confirm the pre-selected label or pick the right one; "
    "choose 'None of these / new label' (and say which in the comment) when no label fits."
)
CONFIG_TEMPLATE = Path(__file__).with_name("labeling_config.xml")
LABELS_MARKER = "<!-- LABELS -->"
NONE_CHOICE = "None of these / new label"
FROM_NAME, TO_NAME, COMMENT_NAME = "label", "text", "comment"
UNCERTAIN = "UNCERTAIN"  # intelrouter.model.UNCERTAIN, not imported: that module pulls in scikit-learn
BATCH_SIZE = 1000  # tasks per import / per pulled page: ~1 s each on Label Studio's SQLite
# A pull re-reads tasks changed this long before the newest answer it holds: Label Studio stamps a task
# a few ms apart from its annotation, and commits may land out of order. Re-read answers are skipped.
PULL_OVERLAP = timedelta(minutes=10)

T = TypeVar("T")

# review_tasks.status
PENDING, PUSHED, COMPLETED, SKIPPED = "pending", "pushed", "completed", "skipped"


@dataclass
class PushResult:
    """What a push did."""

    project_id: int
    selected: int = 0  # needs-review queries without a task when the push started
    pushed: int = 0  # tasks created by this push
    adopted: int = 0  # tasks an interrupted push had created, recorded now instead of sent again


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
class SyncResult:
    """A pull followed by a push."""

    pull: PullResult
    push: PushResult


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


# --- labels and the labeling config ------------------------------------------------------------------


def _production_labels(settings: Settings) -> list[str]:
    """The production model's labels, or [] when no model carries @production."""
    from intelrouter import registry  # imports MLflow: only `setup` needs it

    loaded = registry.load_alias(settings, "production")
    return list(loaded[1].labels) if loaded else []


def label_set(settings: Settings) -> list[str]:
    """Labels reviewers choose from: the production model's, those in ml_data, and every label the model
    guessed for a query waiting for review (so each pre-annotation is a valid choice)."""
    labels = set(_production_labels(settings))
    q = store.queries
    with store.connect(settings) as conn:
        labels.update(conn.execute(select(store.ml_data.c.label).distinct()).scalars())
        guess = func.coalesce(q.c.top_label, q.c.predicted_label)
        labels.update(conn.execute(select(guess).where(q.c.review_status == store.NEEDS_REVIEW).distinct()).scalars())
    return sorted(label for label in labels if label and label not in (UNCERTAIN, NONE_CHOICE))


def labeling_config(labels: Iterable[str]) -> str:
    """The labeling config: the shipped template with one single-choice option per label."""
    template = CONFIG_TEMPLATE.read_text(encoding="utf-8")
    choices = sorted({label for label in labels if label and label != NONE_CHOICE})
    return template.replace(LABELS_MARKER, "\n    ".join(f"<Choice value={quoteattr(c)}/>" for c in choices))


def project_labels(project: dict[str, Any]) -> set[str]:
    """The labels a Label Studio project's config offers (without the "none of these" choice)."""
    control = (project.get("parsed_label_config") or {}).get(FROM_NAME) or {}
    return {label for label in control.get("labels", []) if label != NONE_CHOICE}


# --- settings and the client --------------------------------------------------------------------------


def _project_id(settings: Settings, project_id: int | None) -> int:
    pid = project_id if project_id is not None else settings.label_studio_project_id
    if pid is None:
        raise ConfigError(
            "INTELROUTER_LABEL_STUDIO_PROJECT_ID is not set: run `intelrouter review setup` and set it to the "
            "id it prints, or pass --project-id"
        )
    return pid


@contextmanager
def _session(settings: Settings, client: LabelStudioClient | None) -> Iterator[LabelStudioClient]:
    if client is not None:
        yield client
        return
    with LabelStudioClient.from_settings(settings) as own:
        yield own


def setup_project(settings: Settings, *, title: str = PROJECT_TITLE, client: LabelStudioClient | None = None) -> int:
    """Create the review project (or update the configured one, or the one with this title); returns its id."""
    with _session(settings, client) as ls:  # first: a missing URL or key fails before any slow work
        labels = set(label_set(settings))
        if not labels:
            raise InsufficientDataError(
                "no labels to review with: import ground truth into ml_data, train a model, or capture queries first"
            )
        if settings.label_studio_project_id is not None:
            project = ls.get_project(settings.label_studio_project_id)
        else:
            project = ls.find_project(title)
        if project is None:
            return int(ls.create_project(title, labeling_config(labels), PROJECT_DESCRIPTION)["id"])
        _ensure_labels(ls, project, labels)
        return int(project["id"])


def _ensure_labels(ls: LabelStudioClient, project: dict[str, Any], needed: set[str]) -> None:
    """Add missing labels to the project's config; labels already there stay (answers may use them)."""
    have = project_labels(project)
    config = labeling_config(have | needed)
    if config != project.get("label_config"):
        ls.update_project(int(project["id"]), label_config=config)


# --- push ---------------------------------------------------------------------------------------------


def _guess(row: Any) -> str | None:
    label = row.top_label or row.predicted_label
    return None if not label or label == UNCERTAIN else label


def _task(row: Any) -> dict[str, Any]:
    """The Label Studio task for one query: its data, and the model's guess as a pre-annotation."""
    task: dict[str, Any] = {
        "data": {"text": row.text, "language": row.language, "priority": row.review_priority, "query_id": row.id}
    }
    guess = _guess(row)
    if guess is not None:
        result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [guess]}}]
        task["predictions"] = [
            {"model_version": row.model_version or "unknown", "score": float(row.confidence), "result": result}
        ]
    return task


def _select_for_push(conn: Connection, project_id: int, limit: int | None) -> list[Any]:
    """Needs-review queries without a task in this project: priority first (2 before 5), least confident next."""
    q, r = store.queries, store.review_tasks
    stmt = (
        select(q.c.id, q.c.text, q.c.language, q.c.review_priority, q.c.confidence, q.c.predicted_label,
               q.c.top_label, q.c.model_version)
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
    pid = _project_id(settings, project_id)
    with _session(settings, client) as ls:
        project = ls.get_project(pid)
        result = PushResult(pid, adopted=reconcile(settings, ls, pid))
        with store.connect(settings) as conn:
            rows = _select_for_push(conn, pid, limit)
        result.selected = len(rows)
        _ensure_labels(ls, project, {g for g in map(_guess, rows) if g})
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            _record_intent(settings, pid, batch)
            try:
                ids = ls.import_tasks(pid, [_task(row) for row in batch])
            except LabelStudioError as exc:
                raise type(exc)(
                    f"push stopped after {result.pushed} of {len(rows)} tasks: {exc}. "
                    "Run it again: it adopts what landed and sends the rest, without duplicates"
                ) from None
            _record_pushed(settings, pid, [(row.id, tid) for row, tid in zip(batch, ids, strict=True)])
            result.pushed += len(batch)
    return result


# --- pull ---------------------------------------------------------------------------------------------


def _answer(task: dict[str, Any], reviewers: dict[int, str]) -> _Answer | None:
    """The human answer on a task: the newest submitted annotation, else the newest skip."""
    qid = (task.get("data") or {}).get("query_id")
    annotations = sorted(task.get("annotations") or [], key=lambda a: a["id"])
    if not qid or not annotations:
        return None
    submitted = [a for a in annotations if not a.get("was_cancelled")]
    ann = submitted[-1] if submitted else annotations[-1]
    label, comments = None, []
    for item in ann.get("result") or []:
        value = item.get("value") or {}
        if item.get("from_name") == FROM_NAME and value.get("choices"):
            label = value["choices"][0]
        elif item.get("from_name") == COMMENT_NAME and value.get("text"):
            comments.extend(str(t) for t in value["text"])
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
                row = _store_answer(conn, query, answer, result)
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


def _store_answer(conn: Connection, query: Any, answer: _Answer, result: PullResult) -> dict[str, Any]:
    """Write the label (if any) to ml_data and count the answer; returns the review_tasks values to store."""
    agrees = None if answer.status == SKIPPED else answer.label is not None and answer.label == _guess(query)
    if answer.label is not None:
        groundtruth.upsert_label(
            conn, query_id=query.id, text=query.text, label=answer.label, source="label-studio",
            language=query.language, reviewer=answer.reviewer,
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
    pid = _project_id(settings, project_id)
    with _session(settings, client) as ls:
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


def sync(
    settings: Settings,
    limit: int | None = None,
    project_id: int | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    client: LabelStudioClient | None = None,
) -> SyncResult:
    """Pull the answers, then push what waits for review."""
    with _session(settings, client) as ls:
        pulled = pull(settings, limit, project_id, batch_size=batch_size, client=ls)
        pushed = push(settings, limit, project_id, batch_size=batch_size, client=ls)
    return SyncResult(pull=pulled, push=pushed)
