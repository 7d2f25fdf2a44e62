"""The seeds' SQL runs as written on the store (SQLite and PostgreSQL): the compatibility views, the registry's
mirror tables filled by real registry moves and the daily report, and migration 0004 both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mirror_support import register_version
from seed_sql import MODEL_BLOCKS, SEED_SQL
from training_support import on_shared_tracking, shared_tracking_uri  # noqa: F401 - a fixture

from intelrouter import lifecycle, registry_mirror, store
from intelrouter.capture import log_queries, record_outcomes
from intelrouter.groundtruth import record_feedback
from intelrouter.report import run_report
from intelrouter.triage import triage


@pytest.fixture
def settings(settings, shared_tracking_uri: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201, F811
    """Each test has its own registered model on one shared tracking store (its schema is made once)."""
    return on_shared_tracking(monkeypatch, shared_tracking_uri)


def _query(qid: str, version: str | None, variant: str | None, label: str = "weather", confidence: float = 0.75,
           **extra: Any) -> dict[str, Any]:
    uncertain = confidence < 0.55
    return {"id": qid, "text": f"what is the weather {qid}", "phoneNumber": f"+49151{qid}", "language": "en",
            "predicted_label": "UNCERTAIN" if uncertain else label, "top_label": label, "confidence": confidence,
            "uncertain": uncertain, "model_version": version, "variant": variant, **extra}


@pytest.fixture
def loop(settings, tmp_path: Path) -> dict[str, Any]:  # noqa: ANN001
    """Three versions moved through the real registry (production, a canary at 50 %, one rejected by the gate),
    today's traffic on the first two, triaged, labelled and with callers' outcomes, then the daily report."""
    v1, v2, v3 = (register_version(settings, tmp_path, s, a) for s, a in
                  (("1.0.0", 0.91), ("1.1.0", 0.93), ("1.2.0", 0.7)))
    assert lifecycle.apply_gate(settings, v1, True, ["first model"]) == "production"
    assert lifecycle.apply_gate(settings, v2, True, ["no regression"]) == "canary"
    assert lifecycle.apply_gate(settings, v3, False, ["accuracy regressed"]) == "rejected"
    lifecycle.set_canary_share(settings, 0.5)
    queries = [_query(f"p{i}", v1, "production") for i in range(6)]
    queries += [_query("p6", v1, "production", confidence=0.4), _query("s0", v2, "staging"),
                _query("s1", v2, "staging", label="alarm"),
                _query("t0", None, None, provider="teacher", confidence=0.95)]  # a trusted teacher: auto-approved
    log_queries(settings, queries)
    triage(settings)
    for qid, label in (("p0", "weather"), ("p1", "weather"), ("p2", "alarm"), ("s0", "weather"), ("s1", "weather")):
        record_feedback(settings, qid, label)
    record_outcomes(settings, [{"query_id": "p0", "route_taken": "opensearch"},
                               {"query_id": "p1", "route_taken": "llm", "label": "weather", "provider": "gpt"}])
    run_report(settings)  # the daily report refreshes the mirror's traffic numbers
    return {"settings": settings, "versions": (v1, v2, v3)}


def _run(settings: Any, sql: str) -> list[Any]:
    with store.connect(settings) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET TIME ZONE 'UTC'")  # the store's times are UTC; CURRENT_DATE must be too
        return conn.exec_driver_sql(sql).all()


def test_every_seed_sql_block_runs_as_written_and_returns_rows(loop: dict[str, Any]) -> None:
    settings = loop["settings"]
    for seed, place, sql in SEED_SQL:
        assert _run(settings, sql), f"seed {seed}, {place}: no rows"
    assert len(MODEL_BLOCKS) == 3


def test_the_seed_queries_answer_what_they_ask(loop: dict[str, Any]) -> None:
    settings, (v1, v2, v3) = loop["settings"], loop["versions"]
    by_place = {place: sql for _, place, sql in SEED_SQL}
    model_versions = by_place['Available Commands, "Database Queries": Model versions']
    versions = {r.version: r for r in _run(settings, model_versions)}
    assert {k: (r.status, r.test_accuracy, r.traffic_percentage) for k, r in versions.items()} == {
        v1: ("production", 0.91, 50.0), v2: ("canary", 0.93, 50.0), v3: ("rejected", 0.7, 0.0)}
    [prod] = _run(settings, by_place['Monitoring & Debugging, "Check Model Performance"'])
    # v1 answered 7 (p0..p6): labelled p0, p1 right and p2 wrong; fallbacks: p1 (the caller reported llm) and p6
    # (UNCERTAIN, no report); p0 was answered confidently and the caller reported opensearch
    assert (prod.version, prod.production_accuracy, prod.fallback_rate) == (v1, round(2 / 3, 4), round(2 / 7, 4))
    models = _run(settings, by_place['Monitoring, "View All Models"'])
    assert [r.version for r in models] == [v3, v2, v1]  # newest first
    assert [bool(r.is_active) for r in models] == [False, False, True]
    assert all(r.training_timestamp is not None and r.accuracy is not None and r.f1_score == 0.8 for r in models)

    [(waiting,)] = _run(settings, by_place['Troubleshooting, "Weekly training not running", 3. Check sample count'])
    with store.connect(settings) as conn:
        assert waiting == store.samples_waiting(conn) == 6  # 5 feedback labels + the auto-approved teacher answer
        needs_review = store.count(conn, "SELECT COUNT(*) FROM queries WHERE review_status = 'needs-review'")
    [(count,)] = _run(settings, by_place['Monitoring & Debugging, "Check Training Queue"'])
    assert count == needs_review == 9  # every router answer (the teacher's was auto-approved)
    [(rate,)] = _run(settings, by_place['Monitoring & Debugging, "Check Auto-Approval Rate"'])
    assert float(rate) == pytest.approx(100 / 10)
    [today] = _run(settings, by_place['Available Commands, "Database Queries": Daily statistics'])
    assert str(today.date) == str(today.day) == store.utcnow().date().isoformat() and today.captured == 10
    latest = _run(settings, by_place['Monitoring & Debugging, "Check if Conversations Are Being Captured"'])
    assert len(latest) == 10 and {r.nlu_provider for r in latest} == {"intelrouter", "teacher"}
    assert {r.nlu_intent for r in latest} == {"weather", "alarm", "UNCERTAIN"}


def test_conversation_logs_show_the_callers_outcome_and_no_raw_phone_number(loop: dict[str, Any]) -> None:
    settings = loop["settings"]
    rows = {r.id: r for r in _run(settings, "SELECT * FROM conversation_logs")}
    assert (rows["p1"].route_taken, rows["p1"].final_label, rows["p1"].final_provider) == ("llm", "weather", "gpt")
    assert rows["p0"].route_taken == "opensearch" and rows["p3"].route_taken is None
    assert rows["p0"].user_hash == store.hash_identifier("+49151p0", settings.hash_salt)
    assert not any("+49151" in str(v) for r in rows.values() for v in r)


def test_migrated_views_and_tables_match_the_store(settings) -> None:  # noqa: ANN001
    store.upgrade(settings)
    with store.connect(settings) as conn:
        for name, sql in store.VIEWS.items():
            migrated = list(conn.execute(sa.text(f"SELECT * FROM {name} WHERE 1 = 0")).keys())
            current = list(conn.execute(sa.text(f"SELECT * FROM ({sql}) AS v WHERE 1 = 0")).keys())
            assert migrated == current, name
    insp = sa.inspect(store.get_engine(settings))
    for table in (registry_mirror.model_versions, registry_mirror.model_metadata):
        assert [c["name"] for c in insp.get_columns(table.name)] == list(table.c.keys())


def _downgrade(settings: Any, revision: str) -> None:
    from alembic import command

    cfg = store._alembic_config(settings.db_url)
    with store.get_engine(settings, migrate=False).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    store.dispose_engines()  # forget that this URL was at head


def test_migration_0004_down_and_up_keeps_the_data(settings) -> None:  # noqa: ANN001
    log_queries(settings, [_query("q1", "1", "production")])
    registry_mirror.refresh(settings)  # nothing registered yet: an empty mirror
    _downgrade(settings, "0002")
    assert store.current_revision(settings) == "0002"
    insp = sa.inspect(store.get_engine(settings, migrate=False))
    assert not {"model_versions", "model_metadata"} & set(insp.get_table_names())
    assert not {"conversation_logs", "training_samples"} & set(insp.get_view_names())
    assert "review_status" not in [c["name"] for c in insp.get_columns("training_queue")]
    store.dispose_engines()
    assert store.upgrade(settings) == store.head_revision() == "0004_seed_views"
    assert [r.user_message for r in _run(settings, "SELECT user_message FROM conversation_logs")] == [
        "what is the weather q1"]
