"""The registry's mirror for SQL users: tables model_versions (seed 004) and model_metadata (seed 000).

MLflow's registry stays the source of truth; these tables copy it, one row per registered version, beside what
only the store knows (how each version did on real traffic), so the seeds' SQL runs on the store as written.
`refresh` rewrites them: the registry calls it after every alias or lifecycle move (promote, rollback,
clear_staging, set_canary_share, apply_gate: so training, the canary check and the CLI all refresh it), and the
daily report calls it so the traffic numbers follow. It never raises: a registry or database that cannot be
read is a logged warning, and the next refresh catches up.

Columns, model_versions: `version` the registry version (what queries.model_version holds, so the mirror joins
conversation_logs), `semver`, `status` the lifecycle (testing, canary, production, rejected, archived; the
aliases win over a stale tag), `test_accuracy` from the version's tag, `production_accuracy` online accuracy from
human labels on the answers it gave, `fallback_rate` the share of its answers that ended at a fallback (the
caller's reported route when it reported one, else the router's UNCERTAIN), `traffic_percentage` 100 for
@production minus the canary share while a canary runs, the canary share for @staging, else 0, and `answered`,
`labelled` the counts behind the two rates (each version's whole life).
model_metadata: `accuracy`, `f1_score` (macro), `confidence_threshold` from the version's tags,
`training_timestamp` when its run started, `is_active` = carries @production, `metrics` every metric of the run.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, Integer, String, Table, delete, select

from intelrouter import registry, store
from intelrouter.config import Settings
from intelrouter.errors import first_line
from intelrouter.names import PRODUCTION, STAGING
from intelrouter.outcomes import fallback_routes, per_version, rate

log = logging.getLogger(__name__)


def _table(name: str, *columns: Column) -> Table:
    return Table(name, store.metadata,
                 Column("model_name", String(200), primary_key=True),
                 Column("version", String(64), primary_key=True),
                 *columns,
                 Column("created_at", DateTime, nullable=False),
                 Column("updated_at", DateTime, nullable=False))


model_versions = _table(
    "model_versions",
    Column("semver", String(32)),
    Column("status", String(16), nullable=False),
    Column("test_accuracy", Float),
    Column("production_accuracy", Float),
    Column("fallback_rate", Float),
    Column("traffic_percentage", Float, nullable=False),
    Column("answered", Integer, nullable=False),
    Column("labelled", Integer, nullable=False),
)
model_metadata = _table(
    "model_metadata",
    Column("semver", String(32)),
    Column("run_id", String(64)),
    Column("accuracy", Float),
    Column("f1_score", Float),
    Column("confidence_threshold", Float),
    Column("training_timestamp", DateTime),
    Column("is_active", Boolean, nullable=False),
    Column("metrics", JSON(none_as_null=True)),
)
RUN_FIELDS = ("metrics", "training_timestamp", "run_id")  # read from the version's run once, then kept


def refresh(settings: Settings) -> int | None:
    """Rewrite the mirror from the registry (upsert by version; versions gone from it removed); returns the
    versions written, or None when the registry or the database could not be read (logged, never raised)."""
    try:
        return _refresh(settings)
    except Exception as exc:  # noqa: BLE001 - the mirror must never fail the move or the report that refreshes it
        log.warning("registry mirror (model_versions, model_metadata) not refreshed: %s", first_line(exc))
        return None


def _refresh(settings: Settings) -> int:
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return 0  # no local registry yet: nothing to mirror (and a report must not create one)
    versions = registry.list_model_versions(settings)
    production = registry.alias_version(settings, PRODUCTION)
    staging = registry.alias_version(settings, STAGING)
    share = registry.canary_share(settings) if staging is not None else 0.0
    aliases = {str(production.version) if production else None: PRODUCTION,
               str(staging.version) if staging else None: STAGING}
    with store.connect(settings) as conn:
        have_run = set(conn.execute(
            select(model_metadata.c.version)
            .where(model_metadata.c.model_name == settings.model_name, model_metadata.c.metrics.is_not(None))
        ).scalars())
    runs = {str(mv.version): _run_facts(settings, mv.run_id) for mv in versions if str(mv.version) not in have_run}
    now = store.utcnow()
    with store.connect(settings) as conn:
        numbers = per_version(conn, fallback_routes(settings))
        version_rows, metadata_rows = [], []
        for mv in versions:
            key = str(mv.version)
            tags, alias = dict(mv.tags or {}), aliases.get(key)
            seen = numbers.get(key, {"answered": 0, "fallback": 0, "labelled": 0, "correct": 0})
            created = _time(mv.creation_timestamp) or now
            common = {"model_name": settings.model_name, "version": key, "semver": tags.get("semver"),
                      "created_at": created, "updated_at": now}
            version_rows.append(common | {
                "status": _status(tags, alias), "test_accuracy": _number(tags.get("test_accuracy")),
                "production_accuracy": rate(seen["correct"], seen["labelled"]),
                "fallback_rate": rate(seen["fallback"], seen["answered"]),
                "traffic_percentage": _traffic(alias, share, production is not None, staging is not None),
                "answered": seen["answered"], "labelled": seen["labelled"],
            })
            metadata_rows.append(common | runs.get(key, {}) | {
                "accuracy": _number(tags.get("test_accuracy")), "f1_score": _number(tags.get("test_macro_f1")),
                "confidence_threshold": _number(tags.get("threshold")), "is_active": alias == PRODUCTION,
            })
        for table, rows in ((model_versions, version_rows), (model_metadata, metadata_rows)):
            _upsert(conn, table, rows)
            keep = [r["version"] for r in rows]
            conn.execute(delete(table).where(table.c.model_name == settings.model_name, table.c.version.not_in(keep)))
    return len(versions)


def _upsert(conn: Any, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT (model_name, version) DO UPDATE, one statement per set of columns."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:  # rows whose run was read already leave its fields alone
        groups.setdefault(tuple(row), []).append(row)
    for columns, batch in groups.items():
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["model_name", "version"],
            set_={c: stmt.excluded[c] for c in columns if c not in ("model_name", "version", "created_at")},
        )
        conn.execute(stmt, batch)


def _run_facts(settings: Settings, run_id: str | None) -> dict[str, Any]:
    """The run's metrics and start time ({} metrics when the version has no run or the run is gone)."""
    facts: dict[str, Any] = {"run_id": run_id or None, "metrics": {}, "training_timestamp": None}
    if not run_id:
        return facts
    client = registry.get_client(settings)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        if registry.is_not_found(exc):
            return facts
        raise
    facts.update(metrics={k: float(v) for k, v in sorted(run.data.metrics.items()) if math.isfinite(v)},
                 training_timestamp=_time(run.info.start_time))
    return facts


def _status(tags: dict[str, str], alias: str | None) -> str:
    if alias == PRODUCTION:
        return "production"
    if alias == STAGING:
        return "canary"
    return tags.get("lifecycle") or "testing"


def _traffic(alias: str | None, share: float, has_production: bool, has_staging: bool) -> float:
    """Percent of users a version answers: serving sends the canary share to @staging only beside @production."""
    if alias == PRODUCTION:
        return round(100 * (1 - share), 2) if has_staging else 100.0
    if alias == STAGING and has_production:
        return round(100 * share, 2)
    return 0.0


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _time(millis: int | None) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, UTC).replace(tzinfo=None) if millis else None
