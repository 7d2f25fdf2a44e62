"""Push: one Label Studio task per question waiting for review, the most useful first, with the model's guess.

Queries are grouped by the key of their text (`keys.text_key`: case, spacing, punctuation ignored): a group is one
task, showing how many queries share it, over how many users and languages, and its answer fans out to each of
them (`review_pull`). Queries of a text whose task is still open join it (a ledger row, nothing imported); queries
of a text a human already answered are settled without a task (`triage.resolve_known_texts`). With the
`review_groups` setting off, each query is a task of its own (the seed's way; a baseline to measure against).

Order: priority tier first (2, then 5), then the expected value of the answer, the sum of the group's
uncertainties (1 - confidence; an audited label counts as its audit's uncertainty): uncertainty x how many queries
the answer resolves. Each task's one prediction (model version `ORDER_VERSION`) is scored by that place
(`order_score`) and the project uses uncertainty sampling (set by `review setup`), so Label Studio serves the open
tasks of every push in this one order.

Label Studio does not de-duplicate, so `review_tasks` is the ledger that makes a push safe to repeat: it records
its intent (status pending, with the text key) before importing and the task ids after; the next push adopts, by
text key, tasks an interrupted import left behind instead of sending them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, update
from sqlalchemy.engine import Connection

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import LabelStudioError
from intelrouter.keys import text_key
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.review_project import (
    BATCH_SIZE,
    COMPLETED,
    ORDER_VERSION,
    PENDING,
    PUSHED,
    ensure_labels,
    guess,
    project_id_of,
    session,
)
from intelrouter.review_screen import Screen
from intelrouter.triage import HIGH_PRIORITY, HUMAN_REVIEW, MEDIUM_PRIORITY, resolve_known_texts

NO_PRIORITY = 99  # a query waiting without a priority goes after both tiers
SINGLE = "query:"  # the group key of a query pushed on its own (setting review_groups off)


@dataclass
class PushResult:
    """What a push did."""

    project_id: int
    selected: int = 0  # queries waiting for review without a task when the push started
    pushed: int = 0  # tasks created by this push (one per text)
    adopted: int = 0  # tasks an interrupted push had created, recorded now instead of sent again
    queued: int = 0  # queries recorded under the tasks this push created
    joined: int = 0  # queries added to a task still open for the same text (nothing imported)
    resolved: int = 0  # queries settled from a text a human already answered (no task)


@dataclass
class Group:
    """The queries waiting for review that share one text key (or one query, with review_groups off): one task."""

    text_key: str  # the group key: the text key, or "query:<id>"
    members: list[Any]  # query rows, the representative (newest) first
    priority: int
    value: float  # sum of the members' uncertainties: uncertainty x how many queries the answer resolves
    users: int = 0
    languages: list[str] = field(default_factory=list)

    @property
    def representative(self) -> Any:
        """The query whose text, guess and confidence the task shows (the newest of the group)."""
        return self.members[0]

    @property
    def blind(self) -> bool:
        """Every member is under audit: no pre-selected guess, so the reviewer's answer is not anchored on it."""
        return all(m.audit_u is not None for m in self.members)

    @property
    def top_label(self) -> str | None:
        """The representative's top label (so `review_project.guess(group)` reads the guess the task shows)."""
        return self.representative.top_label

    @property
    def predicted_label(self) -> str | None:
        """The representative's predicted label."""
        return self.representative.predicted_label


def task_data(group: Group) -> dict[str, Any]:
    """The task's `data`: what the reviewer sees of the question, built in this one place."""
    rep = group.representative
    return {
        "text": rep.text, "language": rep.language, "priority": group.priority, "query_id": rep.id,
        "text_key": rep.text_key, "count": len(group.members), "users": group.users,
        "languages": ", ".join(group.languages), "value": round(group.value, 4),
        "model_version": str(rep.model_version or ""),
    }


def order_score(priority: int | None, value: float) -> float:
    """The task's place in the review queue, lowest first: the tier (priority 2, then 5, then none), then the
    value (uncertainty x queries resolved, highest first). Label Studio's uncertainty sampling serves the lowest
    prediction score first among all open tasks, so a valuable question pushed today goes before an old one-off."""
    tier = {HIGH_PRIORITY: 0, MEDIUM_PRIORITY: 1}.get(priority if priority is not None else NO_PRIORITY, 2)
    return round(tier + 1.0 / (1.0 + max(value, 0.0)), 6)


def _task(group: Group, screen: Screen) -> dict[str, Any]:
    """The Label Studio task for one group: its data, the screen's suggestions, and its one prediction scored by its
    place in the queue (`order_score`); the answering model's version is in the data (`model_version`)."""
    return screen.task(group.representative, task_data(group), order_score(group.priority, group.value),
                       blind=group.blind)


# --- what waits ---------------------------------------------------------------------------------------


def _open_audits() -> Any:
    """Per query under an open audit: the audit's uncertainty (the most of its audits)."""
    a = store.audits
    return (select(a.c.query_id, func.max(a.c.uncertainty).label("u"))
            .where(a.c.outcome.is_(None)).group_by(a.c.query_id).subquery())


def _untasked(project_id: int) -> tuple[Any, list[Any]]:
    """The FROM clause and conditions of queries waiting for review without a task in this project."""
    q, r = store.queries, store.review_tasks
    joined = q.outerjoin(r, and_(r.c.query_id == q.c.id, r.c.project_id == project_id))
    return joined, [q.c.review_status == store.NEEDS_REVIEW, r.c.task_id.is_(None)]


def fill_text_keys(conn: Connection) -> int:
    """Give a text key to queries waiting for review that have none (set outside triage); returns how many."""
    q = store.queries
    rows = conn.execute(select(q.c.id, q.c.text).where(q.c.review_status == store.NEEDS_REVIEW,
                                                        q.c.text_key.is_(None))).all()
    if rows:
        conn.execute(update(q).where(q.c.id == bindparam("b_id")).values(text_key=bindparam("b_key")),
                     [{"b_id": i, "b_key": text_key(t)} for i, t in rows])
    return len(rows)


def _resolve_known(conn: Connection, settings: Settings, project_id: int) -> int:
    """Settle untasked waiting queries whose text a human answered since they were triaged."""
    if not settings.resolve_known_texts:
        return 0
    q, m, r = store.queries, store.ml_data, store.review_tasks
    source, where = _untasked(project_id)
    known = or_(
        q.c.text_key.in_(select(m.c.text_key).where(m.c.source.in_(HUMAN_REVIEW), m.c.text_key.is_not(None))),
        q.c.text_key.in_(select(r.c.text_key).where(r.c.status == COMPLETED, r.c.human_label.is_(None))),
    )
    rows = conn.execute(select(q.c.id, q.c.text, q.c.language, q.c.text_key).select_from(source)
                        .where(*where, r.c.id.is_(None), known)).all()
    return resolve_known_texts(conn, settings, rows).total


def _join_open_tasks(conn: Connection, project_id: int) -> list[tuple[Any, int]]:
    """Untasked waiting queries whose text has a task still open here (no answer yet): (query row, task id)."""
    q, r = store.queries, store.review_tasks
    open_tasks = (
        select(r.c.task_id, func.max(r.c.text_key).label("text_key"))
        .where(r.c.project_id == project_id, r.c.task_id.is_not(None))
        .group_by(r.c.task_id)
        .having(func.sum(case((r.c.status != PUSHED, 1), else_=0)) == 0)
        .subquery()
    )
    source, where = _untasked(project_id)
    rows = conn.execute(
        select(q.c.id, q.c.text_key, q.c.review_priority, open_tasks.c.task_id)
        .select_from(source.join(open_tasks, open_tasks.c.text_key == q.c.text_key)).where(*where)
    ).all()
    return [(row, row.task_id) for row in rows]


def _group_key(grouped: bool) -> Any:
    """The SQL expression of a query's group key: its text key, or (ungrouped) "query:<id>"."""
    q = store.queries
    return q.c.text_key if grouped else literal(SINGLE) + q.c.id


def _select_groups(conn: Connection, project_id: int, limit: int | None, grouped: bool = True) -> list[str]:
    """Keys of the groups to push, in review order: priority tier, value (descending), oldest first."""
    q = store.queries
    audits = _open_audits()
    source, where = _untasked(project_id)
    uncertainty = func.coalesce(audits.c.u, 1.0 - q.c.confidence)
    priority = func.min(func.coalesce(q.c.review_priority, NO_PRIORITY))
    key = _group_key(grouped).label("group_key")
    stmt = (
        select(key)
        .select_from(source.outerjoin(audits, audits.c.query_id == q.c.id))
        .where(*where)
        .group_by(key)
        .order_by(priority, func.sum(uncertainty).desc(), func.min(q.c.created_at), key)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(conn.execute(stmt).scalars())


def load_groups(conn: Connection, project_id: int, keys: Sequence[str], grouped: bool = True) -> list[Group]:
    """The groups of these keys (their untasked waiting queries), in the order of `keys`."""
    q = store.queries
    audits = _open_audits()
    source, where = _untasked(project_id)
    key = _group_key(grouped)
    members: dict[str, list[Any]] = {}
    for start in range(0, len(keys), 1000):
        stmt = (
            select(q.c.id, q.c.text, q.c.text_key, q.c.language, q.c.user_hash, q.c.review_priority, q.c.confidence,
                   q.c.predicted_label, q.c.top_label, q.c.model_version, q.c.provider, q.c.created_at,
                   audits.c.u.label("audit_u"),
                   key.label("group_key"))
            .select_from(source.outerjoin(audits, audits.c.query_id == q.c.id))
            .where(*where, key.in_(keys[start : start + 1000]))
            .order_by(q.c.created_at.desc(), q.c.id.desc())
        )
        for row in conn.execute(stmt):
            members.setdefault(row.group_key, []).append(row)
    groups = []
    for key in keys:
        rows = members.get(key)
        if not rows:
            continue  # settled meanwhile
        value = sum(r.audit_u if r.audit_u is not None else 1.0 - r.confidence for r in rows)
        groups.append(Group(
            key, rows, min(r.review_priority or NO_PRIORITY for r in rows), value,
            users=len({r.user_hash for r in rows if r.user_hash}),
            languages=sorted({r.language for r in rows if r.language}),
        ))
    return groups


# --- the ledger ---------------------------------------------------------------------------------------


def _record_intent(settings: Settings, project_id: int, rows: Sequence[Any]) -> None:
    """Before importing: a pending review_tasks row per query (with its group key), so a crash leaves a trace."""
    now = store.utcnow()
    intents = [
        {"query_id": row.id, "project_id": project_id, "priority": row.review_priority, "status": PENDING,
         "text_key": getattr(row, "group_key", None) or row.text_key, "updated_at": now}
        for row in rows
    ]
    if not intents:
        return
    with store.connect(settings) as conn:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(store.review_tasks).on_conflict_do_nothing(index_elements=["query_id", "project_id"])
        conn.execute(stmt, intents)


def _record_pushed(settings: Settings, project_id: int, pairs: Sequence[tuple[str, int]]) -> None:
    """After importing: (text key, task id) pairs; every pending query of that text gets the task, status pushed."""
    if not pairs:
        return
    r = store.review_tasks
    now = store.utcnow()
    stmt = (
        update(r)
        .where(r.c.text_key == bindparam("key"), r.c.project_id == project_id, r.c.task_id.is_(None))
        .values(task_id=bindparam("tid"), status=PUSHED, pushed_at=now, updated_at=now)
    )
    with store.connect(settings) as conn:
        conn.execute(stmt, [{"key": key, "tid": tid} for key, tid in pairs])


def reconcile(settings: Settings, ls: LabelStudioClient, project_id: int) -> int:
    """Adopt tasks an interrupted push created but did not record (matched by group key); returns how many."""
    r = store.review_tasks
    with store.connect(settings) as conn:
        pending = set(conn.execute(
            select(r.c.text_key).where(r.c.project_id == project_id, r.c.task_id.is_(None)).distinct()
        ).scalars())
        if not pending:
            return 0
        known = conn.execute(select(func.max(r.c.task_id)).where(r.c.project_id == project_id)).scalar() or 0
    found: dict[str, int] = {}
    # Task ids only grow and every recorded task is older than any unrecorded one: list only the newer.
    for page in ls.iter_tasks(project_id, after_id=int(known), page_size=5000):
        for task in page:
            data = task.get("data") or {}
            for key in (data.get("text_key"), f"{SINGLE}{data.get('query_id')}"):
                if key in pending and key not in found:
                    found[key] = int(task["id"])
    _record_pushed(settings, project_id, list(found.items()))
    return len(found)


def _prepare(settings: Settings, project_id: int, limit: int | None, result: PushResult) -> list[Group]:
    """Settle known texts and join open tasks, then choose and load the groups to push, in review order."""
    with store.connect(settings) as conn:
        fill_text_keys(conn)
        result.resolved = _resolve_known(conn, settings, project_id)
        source, where = _untasked(project_id)
        result.selected = conn.execute(select(func.count()).select_from(source).where(*where)).scalar() or 0
        joining = _join_open_tasks(conn, project_id) if settings.review_groups else []
    if joining:
        _record_intent(settings, project_id, [row for row, _ in joining])
        _record_pushed(settings, project_id, sorted({(row.text_key, tid) for row, tid in joining}))
        result.joined = len(joining)
    grouped = settings.review_groups
    with store.connect(settings) as conn:
        return load_groups(conn, project_id, _select_groups(conn, project_id, limit, grouped), grouped)


def push(
    settings: Settings,
    limit: int | None = None,
    project_id: int | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    client: LabelStudioClient | None = None,
) -> PushResult:
    """Send each waiting question once, the most useful first, with the model's guess; `limit` counts tasks."""
    pid = project_id_of(settings, project_id)
    with session(settings, client) as ls:
        project = ls.get_project(pid)
        result = PushResult(pid, adopted=reconcile(settings, ls, pid))
        groups = _prepare(settings, pid, limit, result)
        ensure_labels(ls, project, {g for g in map(guess, groups) if g})
        screen = Screen(settings)  # loads each model version once for the whole push
        for start in range(0, len(groups), batch_size):
            batch = groups[start : start + batch_size]
            screen.prepare([g.representative for g in batch])
            _record_intent(settings, pid, [m for g in batch for m in g.members])
            try:
                ids = ls.import_tasks(pid, [_task(group, screen) for group in batch])
            except LabelStudioError as exc:
                raise type(exc)(
                    f"push stopped after {result.pushed} of {len(groups)} tasks: {exc}. "
                    "Run it again: it adopts what landed and sends the rest, without duplicates"
                ) from None
            _record_pushed(settings, pid, [(g.text_key, tid) for g, tid in zip(batch, ids, strict=True)])
            result.pushed += len(batch)
            result.queued += sum(len(g.members) for g in batch)
        if result.pushed and project.get("model_version") != ORDER_VERSION:
            # Label Studio accepts a project model version only once predictions of it exist: after the first import
            ls.update_project(pid, model_version=ORDER_VERSION)
    return result
