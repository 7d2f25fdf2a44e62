"""The data store: tables, views, engine and migrations, the same code on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from intelrouter import clock
from intelrouter.config import Settings
from intelrouter.errors import InputError, StoreError, first_line
from intelrouter.keys import digest

metadata = MetaData()

# review_status of a query: pending (not triaged) -> auto-approved | needs-review -> approved | rejected
PENDING, AUTO_APPROVED, NEEDS_REVIEW, APPROVED, REJECTED = (
    "pending",
    "auto-approved",
    "needs-review",
    "approved",
    "rejected",
)

queries = Table(
    "queries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", DateTime, nullable=False, index=True),
    Column("text", Text, nullable=False),
    Column("user_hash", String(64)),
    Column("session_hash", String(64)),
    Column("language", String(16)),
    Column("predicted_label", String(200), nullable=False),
    Column("top_label", String(200)),
    Column("confidence", Float, nullable=False),
    Column("uncertain", Boolean, nullable=False, default=False),
    Column("provider", String(64), nullable=False),
    Column("model_version", String(64)),
    Column("variant", String(16)),
    Column("latency_ms", Float),
    Column("review_status", String(16), nullable=False, default=PENDING),
    Column("review_priority", Integer),
    Column("triaged_at", DateTime),
    # what the caller finally did with the answer, and the fallback's own answer when it gave one (0002)
    Column("route_taken", String(32)),
    Column("final_label", String(200)),
    Column("final_confidence", Float),
    Column("final_provider", String(64)),
    Index("ix_queries_review", "review_status", "review_priority", "confidence"),
)

ml_data = Table(
    "ml_data",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("query_id", String(36), ForeignKey("queries.id"), unique=True),
    Column("dedup_key", String(64), nullable=False, unique=True),
    Column("text", Text, nullable=False),
    Column("text_key", String(64), index=True),  # keys.text_key: one key for copies of a question (0002)
    Column("label", String(200), nullable=False),
    Column("language", String(16)),
    Column("source", String(16), nullable=False),
    Column("confidence", Float),
    Column("reviewer", String(200)),
    Column("split", String(32)),  # train / val / test, drawn once when the row arrives (keys.split_of)
    Column("created_at", DateTime, nullable=False, index=True),
    Column("updated_at", DateTime, nullable=False),
    Column("trained_version", String(64), index=True),
)

review_tasks = Table(
    "review_tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("query_id", String(36), ForeignKey("queries.id"), nullable=False),
    Column("project_id", Integer, nullable=False),
    Column("task_id", Integer),
    Column("priority", Integer),
    Column("status", String(16), nullable=False, default="pending"),
    Column("annotation_id", Integer),
    Column("human_label", String(200)),
    Column("reviewer", String(200)),
    Column("agrees_with_model", Boolean),
    Column("comment", Text),
    Column("pushed_at", DateTime),
    Column("completed_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    Index("ux_review_tasks_query_project", "query_id", "project_id", unique=True),
)

# model_versions and model_metadata, the registry's mirror for SQL users, are declared on this metadata in
# registry_mirror.py, the one module that writes them (migration 0004).

# Views for people, plain SQL both databases accept. Each migration carries a frozen copy of the views it creates
# (0001, 0004): a change here needs a migration that drops and re-creates the view (tests/test_seed_sql.py checks
# the migrated views match this dict). conversation_logs, training_samples and the `review_status` / `date`
# columns let the seeds' SQL run as written (README "SQL for the seeds' users").
VIEWS = {
    "training_queue": f"""
        SELECT id, created_at, text, language, predicted_label, confidence, provider,
               review_priority, model_version, review_status
        FROM queries WHERE review_status = '{NEEDS_REVIEW}'
    """,
    "daily_training_stats": f"""
        SELECT DATE(created_at) AS day,
               COUNT(*) AS captured,
               SUM(CASE WHEN review_status = '{AUTO_APPROVED}' THEN 1 ELSE 0 END) AS auto_approved,
               SUM(CASE WHEN review_status = '{NEEDS_REVIEW}' THEN 1 ELSE 0 END) AS needs_review,
               SUM(CASE WHEN review_status = '{APPROVED}' THEN 1 ELSE 0 END) AS approved,
               SUM(CASE WHEN review_status = '{REJECTED}' THEN 1 ELSE 0 END) AS rejected,
               AVG(CASE WHEN uncertain THEN 1.0 ELSE 0.0 END) AS uncertain_rate,
               DATE(created_at) AS date
        FROM queries GROUP BY DATE(created_at)
    """,
    "model_online_accuracy": """
        SELECT q.model_version, q.variant,
               COUNT(*) AS labelled,
               SUM(CASE WHEN q.top_label = m.label THEN 1 ELSE 0 END) AS correct,
               AVG(CASE WHEN q.top_label = m.label THEN 1.0 ELSE 0.0 END) AS online_accuracy
        FROM queries q JOIN ml_data m ON m.query_id = q.id
        WHERE m.source IN ('feedback', 'override', 'label-studio')
        GROUP BY q.model_version, q.variant
    """,
    "conversation_logs": """
        SELECT id, created_at, text AS user_message, user_hash, session_hash, language,
               predicted_label AS nlu_intent, confidence AS nlu_confidence, provider AS nlu_provider,
               top_label, uncertain, model_version, variant, latency_ms, review_status, review_priority,
               triaged_at, route_taken, final_label, final_confidence, final_provider
        FROM queries
    """,
    "training_samples": """
        SELECT id, query_id, text, label, label AS intent, language, source, confidence, reviewer, split,
               created_at, updated_at, 'approved' AS review_status, trained_version AS model_version_target
        FROM ml_data
    """,
}


def utcnow() -> datetime:
    """Now in UTC, naive: every timestamp in the store is naive UTC (the simulated time during a simulation)."""
    return clock.now()


def to_utc_naive(value: datetime) -> datetime:
    """Normalise an aware or naive datetime to naive UTC."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def parse_when(value: str | date | datetime | None, name: str = "date") -> datetime | None:
    """Parse an ISO date or datetime given by a user; a bad value is an InputError naming it."""
    if value is None or isinstance(value, datetime):
        return to_utc_naive(value) if value else None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        return to_utc_naive(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError:
        raise InputError(f"bad {name} {value!r}: use YYYY-MM-DD or an ISO timestamp") from None


def hash_identifier(value: str | None, salt: str) -> str | None:
    """Salted SHA-256 of a user id or phone number: identifiers are never stored raw."""
    if value is None or value == "":
        return None
    return _salted_sha256(salt, value)


@functools.lru_cache(maxsize=65_536)
def _salted_sha256(salt: str, value: str) -> str:
    # cached: the router hashes the same users' ids on every request they make
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()


def check_text(text_value: Any, max_length: int, where: str = "text") -> str:
    """Validate one query text: a non-empty string within the configured maximum."""
    if not isinstance(text_value, str):
        raise InputError(f"{where}: text must be a string")
    if not text_value.strip():
        raise InputError(f"{where}: text is empty")
    if len(text_value) > max_length:
        raise InputError(f"{where}: text is {len(text_value)} characters, the maximum is {max_length}")
    return text_value


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


_ENGINES: dict[str, Engine] = {}
_MIGRATED: set[str] = set()  # URLs already checked to be at head in this process


def _engine(url: str) -> Engine:
    if url in _ENGINES:
        return _ENGINES[url]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    _ENGINES[url] = engine
    return engine


def get_engine(settings: Settings, migrate: bool = True) -> Engine:
    """The engine for the configured database, migrated to the latest schema unless told otherwise."""
    engine = _engine(settings.db_url)
    if migrate:
        upgrade(settings)
    return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests and servers that stop a database use this)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
    _MIGRATED.clear()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration revision shipped with the code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head() or ""


def current_revision(settings: Settings) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with connect(settings, migrate=False) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(settings: Settings, revision: str = "head") -> str:
    """Bring the schema to `revision` (a no-op when it is already there); returns the revision."""
    from alembic import command

    engine = _engine(settings.db_url)
    if revision == "head" and settings.db_url in _MIGRATED:
        return head_revision()
    if revision == "head" and current_revision(settings) == head_revision():
        _MIGRATED.add(settings.db_url)
        return head_revision()
    try:
        with engine.begin() as conn:
            cfg = _alembic_config(settings.db_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise StoreError(_unreachable(settings, exc)) from None
    _MIGRATED.discard(settings.db_url)
    return current_revision(settings) or ""


def safe_url(settings: Settings) -> str:
    """The database URL in force with its password masked, fit for messages and logs."""
    from sqlalchemy.engine import make_url

    return make_url(settings.db_url).render_as_string(hide_password=True)


def _unreachable(settings: Settings, exc: Exception) -> str:
    safe = safe_url(settings)
    reason = first_line(getattr(exc, "orig", exc))
    return f"database {safe} is unreachable ({reason}): check INTELROUTER_DATABASE_URL and that the server runs"


class connect:  # noqa: N801 - used as a context manager, reads like a function
    """A transaction on the store: `with connect(settings) as conn:`; commits on success, rolls back on error."""

    def __init__(self, settings: Settings, migrate: bool = True) -> None:
        self.settings, self.migrate = settings, migrate

    def __enter__(self) -> Connection:
        engine = get_engine(self.settings, migrate=self.migrate)
        try:
            self._ctx = engine.begin()
            return self._ctx.__enter__()
        except OperationalError as exc:
            raise StoreError(_unreachable(self.settings, exc)) from None

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._ctx.__exit__(*exc_info)
        except OperationalError as exc:
            raise StoreError(_unreachable(self.settings, exc)) from None


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], key: str) -> int:
    """Insert rows, skipping any whose unique `key` already exists; returns how many were new."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        if len(rows) >= COPY_MIN_ROWS:
            return _copy_insert_ignore(conn, table, rows, key)
        from sqlalchemy.dialects.postgresql import insert
        # RETURNING yields only the rows actually inserted; psycopg's executemany rowcount is not reliable
        stmt = insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
        return len(conn.execute(stmt, list(rows)).all())
    # SQLite: one plain executemany (sqlite3 sums the rows it changed); the values go through the columns' own
    # bind processors once per batch, which halves the cost per row of SQLAlchemy's compiled executemany
    cols = list(rows[0])
    procs = [table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for c in cols]
    convert = [(i, proc) for i, proc in enumerate(procs) if proc is not None]
    params = []
    for row in rows:
        values = [row[c] for c in cols]
        for i, proc in convert:
            if values[i] is not None:
                values[i] = proc(values[i])
        params.append(tuple(values))
    sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
           f"ON CONFLICT ({key}) DO NOTHING")
    return conn.exec_driver_sql(sql, params).rowcount


COPY_MIN_ROWS = 200  # below this a multi-row INSERT is as fast as COPY


def _copy_insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], key: str) -> int:
    """PostgreSQL bulk path: COPY into a temp table, then INSERT ... ON CONFLICT DO NOTHING, same transaction."""
    cols = list(rows[0])
    names = ", ".join(cols)
    stage = f"stage_{table.name}_{digest(names)[:8]}"
    raw = conn.connection.driver_connection  # the psycopg connection inside this SQLAlchemy transaction
    with raw.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DROP AS SELECT {names} FROM {table.name} WITH NO DATA"
        )
        cur.execute(f"TRUNCATE {stage}")
        with cur.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in cols])
        cur.execute(
            f"WITH ins AS (INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage} "
            f"ON CONFLICT ({key}) DO NOTHING RETURNING 1) SELECT COUNT(*) FROM ins"
        )
        return int(cur.fetchone()[0])


def samples_waiting(conn: Connection) -> int:
    """Approved ground-truth rows no model version has used yet (the weekly trigger and the alert count these)."""
    return count(conn, "SELECT COUNT(*) FROM ml_data WHERE trained_version IS NULL")


def count(conn: Connection, sql: str, **params: Any) -> int:
    """Run a COUNT-style query and return its integer."""
    return int(conn.execute(text(sql), params).scalar() or 0)


