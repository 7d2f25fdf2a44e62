"""Capture: log inference records one at a time or in bulk, and import past conversations from JSONL."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import bindparam, select, update

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import InputError, NotFoundError
from intelrouter.jsonfiles import iter_objects
from intelrouter.keys import digest
from intelrouter.outcomes import normalise_route

BATCH_SIZE = 5000


class QueryRecord(BaseModel):
    """One routed or captured query; identifiers arrive raw and are hashed before they are stored."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), max_length=36)
    text: str
    user_id: str | None = None
    # the user id when user_id is absent; seed 004's callers send phoneNumber
    phone_number: str | None = Field(None, validation_alias=AliasChoices("phone_number", "phoneNumber"))
    session_id: str | None = None
    # already-hashed identifiers (the serving spill file carries these), stored as they are
    user_hash: str | None = Field(None, max_length=64)
    session_hash: str | None = Field(None, max_length=64)
    language: str | None = Field(None, max_length=16)
    predicted_label: str = Field(min_length=1, max_length=200)
    top_label: str | None = Field(None, max_length=200)
    confidence: float = Field(ge=0, le=1)
    uncertain: bool = False
    provider: str = Field("intelrouter", min_length=1, max_length=64)
    model_version: str | None = Field(None, max_length=64)
    variant: str | None = Field(None, max_length=16)
    latency_ms: float | None = None
    created_at: datetime = Field(default_factory=store.utcnow)
    # what the caller finally did with the answer, and the fallback's answer when it gave one (see Outcome)
    route_taken: str | None = Field(None, min_length=1, max_length=32)
    final_label: str | None = Field(None, min_length=1, max_length=200)
    final_confidence: float | None = Field(None, ge=0, le=1)
    final_provider: str | None = Field(None, min_length=1, max_length=64)

    @field_validator("user_id", "phone_number", "session_id", "model_version", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("route_taken", mode="before")
    @classmethod
    def _route(cls, value: Any) -> Any:
        return normalise_route(value)

    def to_row(self, settings: Settings) -> dict[str, Any]:
        """The `queries` row for this record, identifiers hashed and the text checked."""
        store.check_text(self.text, settings.max_text_length)
        user = self.user_id or self.phone_number
        return query_row(
            self.id, store.to_utc_naive(self.created_at), self.text,
            self.user_hash or store.hash_identifier(user, settings.hash_salt),
            self.session_hash or store.hash_identifier(self.session_id, settings.hash_salt),
            self.language, self.predicted_label, self.top_label or self.predicted_label, self.confidence,
            self.uncertain, self.provider, self.model_version, self.variant, self.latency_ms,
        ) | {"route_taken": self.route_taken, "final_label": self.final_label,
             "final_confidence": self.final_confidence, "final_provider": self.final_provider}


class Outcome(BaseModel):
    """What the caller finally did with one answer: the route it took (e.g. opensearch, php, llm, human) and,
    when a fallback answered, that answer (label, confidence, provider; also accepted as final_label, ...).
    A fallback's UNCERTAIN is stored as given: triage never makes it ground truth."""

    model_config = ConfigDict(extra="forbid")

    query_id: str = Field(min_length=1, max_length=36)
    route_taken: str = Field(min_length=1, max_length=32, description="Where the query went, e.g. `llm`.")
    label: str | None = Field(None, min_length=1, max_length=200,
                              validation_alias=AliasChoices("label", "final_label"))
    confidence: float | None = Field(None, ge=0, le=1, validation_alias=AliasChoices("confidence", "final_confidence"))
    provider: str | None = Field(None, min_length=1, max_length=64,
                                 validation_alias=AliasChoices("provider", "final_provider"))

    @field_validator("route_taken", mode="before")
    @classmethod
    def _route(cls, value: Any) -> Any:
        return normalise_route(value)


def query_row(
    query_id: str, created_at: datetime, text: str, user_hash: str | None, session_hash: str | None,
    language: str | None, predicted_label: str, top_label: str, confidence: float, uncertain: bool, provider: str,
    model_version: str | None, variant: str | None, latency_ms: float | None,
) -> dict[str, Any]:
    """A new `queries` row from checked values (the serving hot path builds its rows here, skipping validation)."""
    return {
        "id": query_id, "created_at": created_at, "text": text, "user_hash": user_hash,
        "session_hash": session_hash, "language": language, "predicted_label": predicted_label,
        "top_label": top_label, "confidence": confidence, "uncertain": uncertain, "provider": provider,
        "model_version": model_version, "variant": variant, "latency_ms": latency_ms,
        "review_status": store.PENDING, "review_priority": None, "triaged_at": None,
    }


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_rows(conn: Any, rows: Iterable[dict[str, Any]], batch_size: int = BATCH_SIZE) -> int:
    """Insert prepared `queries` rows in batches on an open connection; an id already stored is skipped."""
    return sum(store.insert_ignore(conn, store.queries, b, key="id") for b in _batches(rows, batch_size))


def log_queries(
    settings: Settings, records: Iterable[QueryRecord | dict[str, Any]], batch_size: int = BATCH_SIZE
) -> int:
    """Log many inference records in one transaction, batched; returns how many rows were new."""
    rows = (
        (r if isinstance(r, QueryRecord) else QueryRecord.model_validate(r)).to_row(settings) for r in records
    )
    with store.connect(settings) as conn:
        return write_rows(conn, rows, batch_size)


def log_query(settings: Settings, record: QueryRecord | dict[str, Any]) -> str:
    """Log one inference record; returns its query id."""
    rec = record if isinstance(record, QueryRecord) else QueryRecord.model_validate(record)
    log_queries(settings, [rec])
    return rec.id


def read_jsonl_records(path: Path, settings: Settings) -> list[dict[str, Any]]:
    """Parse and validate every line of a conversations JSONL file; any bad line is an InputError."""
    rows: list[dict[str, Any]] = []
    for lineno, obj in iter_objects(path):
        where = f"{path}:{lineno}"
        obj = _with_stable_id(obj)
        try:
            rows.append(QueryRecord.model_validate(obj).to_row(settings))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "record"
            raise InputError(f"{where}: {field}: {err['msg']}; nothing was imported") from None
        except InputError as exc:
            raise InputError(f"{where}: {str(exc).split(': ', 1)[-1]}; nothing was imported") from None
    return rows


def _with_stable_id(obj: dict[str, Any]) -> dict[str, Any]:
    """Give a record without an id a deterministic one, so importing the same file twice adds nothing."""
    obj = dict(obj)
    if obj.get("created_at") is None and obj.get("timestamp") is not None:
        obj["created_at"] = obj["timestamp"]
    if obj.get("created_at") is None:
        obj.pop("created_at", None)
    if not obj.get("id"):
        key = digest(obj.get("text"), obj.get("user_id"), obj.get("created_at"))
        obj["id"] = str(uuid.UUID(key[:32]))
    return obj


def import_conversations(settings: Settings, path: Path, batch_size: int = BATCH_SIZE) -> tuple[int, int]:
    """Import a JSONL of past conversations in one transaction; returns (rows read, rows new)."""
    rows = read_jsonl_records(path, settings)
    with store.connect(settings) as conn:
        return len(rows), write_rows(conn, rows, batch_size)


def record_outcomes(settings: Settings, outcomes: Iterable[Outcome | Mapping[str, Any]]) -> int:
    """Store what callers finally did with answers, by query id; returns the rows updated.

    All or nothing: a bad outcome is an InputError, an unknown query id a NotFoundError, and then nothing is
    written. An outcome replaces the query's earlier one (the last report of a query wins); the same report
    twice changes nothing.
    """
    latest: dict[str, Outcome] = {}
    for i, raw in enumerate(outcomes, start=1):
        try:
            outcome = raw if isinstance(raw, Outcome) else Outcome.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "outcome"
            raise InputError(f"outcome {field}: {err['msg']} (outcome #{i}); nothing was recorded") from None
        latest[outcome.query_id] = outcome
    if not latest:
        return 0
    q, ids = store.queries, list(latest)
    rows = [{"b_id": o.query_id, "b_route": o.route_taken, "b_label": o.label, "b_confidence": o.confidence,
             "b_provider": o.provider} for o in latest.values()]
    stmt = (update(q).where(q.c.id == bindparam("b_id"))
            .values(route_taken=bindparam("b_route"), final_label=bindparam("b_label"),
                    final_confidence=bindparam("b_confidence"), final_provider=bindparam("b_provider")))
    with store.connect(settings) as conn:
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            known.update(conn.execute(select(q.c.id).where(q.c.id.in_(ids[start:start + 500]))).scalars())
        missing = [i for i in ids if i not in known]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise NotFoundError(f"unknown query id {missing[0]}{more}: nothing was recorded")
        for start in range(0, len(rows), BATCH_SIZE):
            conn.execute(stmt, rows[start:start + BATCH_SIZE])
    return len(rows)
