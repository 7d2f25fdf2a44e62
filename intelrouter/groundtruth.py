"""Ground truth: the one way a label enters `ml_data` (feedback, override, review, auto-approval, import).

Every row arrives with the key of its text (`keys.text_key`) and its permanent split: the split it was imported
with (train/val/test), else one drawn from the text key with the configured shares (`Settings.split_shares`).
Copies of a question share a key, hence a split; a row keeps its split for good, whatever happens to its label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import InputError, NoActiveModelError, NotFoundError
from intelrouter.keys import digest, known_split, split_of, text_key
from intelrouter.names import SOURCE_PRECEDENCE
from intelrouter.trust import record_outcomes


def upsert_label(
    conn: Connection,
    *,
    query_id: str | None,
    text: str,
    label: str,
    source: str,
    language: str | None = None,
    confidence: float | None = None,
    reviewer: str | None = None,
    split: str | None = None,
    shares: tuple[float, float],
) -> bool:
    """Store one label; for a query, a source of equal or higher precedence replaces the earlier label.

    `shares`: (test, val) the split of a new text is drawn with. Returns True when a row was written or changed,
    False when the same label was already there.
    """
    if source not in SOURCE_PRECEDENCE:
        raise InputError(f"unknown label source {source!r}")
    if not label or not label.strip():
        raise InputError("label is empty")
    now = store.utcnow()
    row = {
        "query_id": query_id,
        "text": text,
        "label": label,
        "language": language,
        "source": source,
        "confidence": confidence,
        "reviewer": reviewer,
        "split": split,
        "created_at": now,
        "updated_at": now,
        "trained_version": None,
    }
    if query_id is None:
        return insert_labels(conn, [row], source, shares=shares) == 1
    t = store.ml_data
    existing = conn.execute(select(t.c.id, t.c.label, t.c.source).where(t.c.query_id == query_id)).first()
    if existing is None:
        row["dedup_key"] = digest("query", query_id)
        return store.insert_ignore(conn, t, [with_split(row, shares)], key="dedup_key") == 1
    if existing.label == label and existing.source == source:
        return False
    if SOURCE_PRECEDENCE[source] < SOURCE_PRECEDENCE.get(existing.source, 0):
        return False
    changes = {k: v for k, v in row.items() if k not in ("created_at", "query_id", "split")}
    if existing.label == label:
        changes.pop("trained_version")  # same label, only its provenance changed: the training use stands
    conn.execute(update(t).where(t.c.id == existing.id).values(**changes))
    return True


def with_split(row: dict[str, Any], shares: tuple[float, float]) -> dict[str, Any]:
    """The row with its text key and permanent split (its own train/val/test, else drawn from the text key)."""
    key = text_key(row["text"])
    return row | {"text_key": key, "split": known_split(row.get("split")) or split_of(key, *shares)}


def insert_labels(conn: Connection, rows: list[dict[str, Any]], source: str, *, shares: tuple[float, float],
                  batch_size: int = 5000) -> int:
    """Bulk-insert labels not tied to a query (imports); a row already stored is skipped. Returns how many were new.

    `shares`: (test, val) the split of a row without one is drawn with."""
    now = store.utcnow()
    full = [
        with_split({"query_id": None, "language": None, "confidence": None, "reviewer": None, "split": None,
                    "created_at": now, "updated_at": now, "trained_version": None, **r, "source": source,
                    "dedup_key": digest(source, r["text"], r["label"], r.get("split"))}, shares)
        for r in rows
    ]
    return sum(
        store.insert_ignore(conn, store.ml_data, full[i : i + batch_size], key="dedup_key")
        for i in range(0, len(full), batch_size)
    )


def _query(conn: Connection, query_id: str) -> Any:
    q = store.queries
    row = conn.execute(select(q.c.text, q.c.language).where(q.c.id == query_id)).first()
    if row is None:
        raise NotFoundError(f"unknown query id {query_id}")
    return row


def _record(settings: Settings, query_id: str, label: str, source: str) -> dict[str, Any]:
    with store.connect(settings) as conn:
        query = _query(conn, query_id)
        written = upsert_label(conn, query_id=query_id, text=query.text, label=label, source=source,
                               language=query.language, shares=settings.split_shares)
    return {"query_id": query_id, "label": label, "source": source, "written": written}


def record_feedback(settings: Settings, query_id: str, label: str) -> dict[str, Any]:
    """A user's label for an answered query; the same feedback twice is stored once."""
    return _record(settings, query_id, label, "feedback")


def record_override(settings: Settings, query_id: str, label: str) -> dict[str, Any]:
    """A user's correction: replaces any earlier label for that query."""
    return _record(settings, query_id, label, "override")


def check_label(label: str, known: frozenset[str] | set[str], allow_new: bool) -> None:
    """A label for an answered query must be one the serving models know, unless new labels are allowed."""
    if allow_new:
        return
    if not known:
        raise NoActiveModelError()
    if label not in known:
        raise InputError(f"label {label!r} is not one the model knows "
                         "(set INTELROUTER_ALLOW_NEW_LABELS=true to accept new labels)")


@dataclass(frozen=True)
class Answer:
    """A human answer for some queries (rows with id, text, language): a label, None for "none of these", or a skip."""

    queries: Sequence[Any]
    label: str | None
    reviewer: str | None = None
    skipped: bool = False


def settle_all(conn: Connection, answers: Sequence[Answer], *, shares: tuple[float, float]) -> dict[str, str]:
    """Store human answers and each query's new review status, which it returns.

    A label becomes each query's ground truth (source label-studio) and approves it. "None of these" (label None)
    rejects it and drops the weaker label it may hold (auto-approved, feedback: a human said it is wrong). Either,
    or a skip, removes the label an earlier answer of this review gave (a correction); a skip leaves the query's
    other labels as they are: approved (or auto-approved) when it has one, else rejected. Open audits of these
    queries are settled by the answer (`trust.record_outcomes`).
    """
    statuses: dict[str, str] = {}
    # "none of these" or a skip may correct an earlier answer of this review: the label it gave goes first
    drop_review_labels(conn, [row.id for a in answers if a.label is None for row in a.queries])
    skipped = [row.id for a in answers if a.skipped for row in a.queries]
    held = _held_sources(conn, skipped)
    for qid in skipped:
        statuses[qid] = (store.AUTO_APPROVED if held[qid] == "auto-approved" else store.APPROVED) if qid in held \
            else store.REJECTED
    drop_weaker_labels(conn, [row.id for a in answers if not a.skipped and a.label is None for row in a.queries])
    outcomes: dict[str, str | None] = {}
    for answer in (a for a in answers if not a.skipped):
        for row in answer.queries:
            if answer.label is not None:
                upsert_label(conn, query_id=row.id, text=row.text, label=answer.label, source="label-studio",
                             language=row.language, reviewer=answer.reviewer, shares=shares)
            outcomes[row.id] = answer.label
            statuses[row.id] = store.REJECTED if answer.label is None else store.APPROVED
    record_outcomes(conn, outcomes)
    q = store.queries
    for status in set(statuses.values()):
        chosen = [qid for qid, s in statuses.items() if s == status]
        for i in range(0, len(chosen), 1000):
            conn.execute(update(q).where(q.c.id.in_(chosen[i:i + 1000])).values(review_status=status))
    return statuses


def settle(conn: Connection, queries: Sequence[Any], label: str | None, *, skipped: bool = False,
           reviewer: str | None, shares: tuple[float, float]) -> dict[str, str]:
    """One human answer for these queries (see `settle_all`); returns each query's new review status."""
    return settle_all(conn, [Answer(queries, label, reviewer, skipped)], shares=shares)


def drop_weaker_labels(conn: Connection, query_ids: Sequence[str]) -> int:
    """Delete these queries' labels from sources below human review (a reviewer said none of them fits)."""
    weaker = [s for s, rank in SOURCE_PRECEDENCE.items() if rank < SOURCE_PRECEDENCE["label-studio"]]
    return _drop_labels(conn, query_ids, weaker)


def drop_review_labels(conn: Connection, query_ids: Sequence[str]) -> int:
    """Delete the label-studio labels of these queries (their review answer is now "none of these" or a skip)."""
    return _drop_labels(conn, query_ids, ["label-studio"])


def _drop_labels(conn: Connection, query_ids: Sequence[str], sources: Sequence[str]) -> int:
    """Delete these queries' labels from these sources, a thousand queries per statement; returns rows deleted."""
    t = store.ml_data
    return sum(conn.execute(delete(t).where(t.c.query_id.in_(query_ids[i:i + 1000]), t.c.source.in_(sources)))
               .rowcount for i in range(0, len(query_ids), 1000))


def _held_sources(conn: Connection, query_ids: Sequence[str]) -> dict[str, str]:
    t = store.ml_data
    held: dict[str, str] = {}
    for i in range(0, len(query_ids), 1000):
        held.update(conn.execute(select(t.c.query_id, t.c.source).where(t.c.query_id.in_(query_ids[i:i + 1000]))).all())
    return held
