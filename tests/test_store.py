"""The store: migrations on SQLite and PostgreSQL, the views, hashed identifiers."""

from sqlalchemy import inspect, text

from intelrouter import store
from intelrouter.capture import log_queries
from intelrouter.config import Settings
from intelrouter.groundtruth import record_feedback
from intelrouter.salt import identifier_salt


def test_upgrade_creates_tables_and_views_and_is_idempotent(settings: Settings) -> None:
    assert store.current_revision(settings) is None
    assert store.upgrade(settings) == store.head_revision()
    store.dispose_engines()
    assert store.upgrade(settings) == store.head_revision()
    insp = inspect(store.get_engine(settings))
    assert {"queries", "ml_data", "review_tasks"} <= set(insp.get_table_names())
    assert {"training_queue", "daily_training_stats", "model_online_accuracy"} <= set(insp.get_view_names())


def test_identifiers_are_stored_hashed(settings: Settings) -> None:
    log_queries(settings, [{"text": "hi", "user_id": "+4915112345", "session_id": "s-1",
                            "predicted_label": "greet", "confidence": 0.9}])
    with store.connect(settings) as conn:
        row = conn.execute(text("SELECT user_hash, session_hash FROM queries")).one()
    assert row.user_hash == store.hash_identifier("+4915112345", identifier_salt(settings))
    assert "+4915112345" not in row.user_hash and len(row.user_hash) == 64
    assert row.session_hash == store.hash_identifier("s-1", identifier_salt(settings))


def test_views_count_per_day_and_per_model(settings: Settings) -> None:
    ids = [f"q{i}" for i in range(4)]
    log_queries(settings, [
        {"id": ids[0], "text": "a", "predicted_label": "x", "confidence": 0.9, "model_version": "1.0.0",
         "created_at": "2026-11-01T10:00:00"},
        {"id": ids[1], "text": "b", "predicted_label": "UNCERTAIN", "top_label": "y", "confidence": 0.3,
         "uncertain": True, "model_version": "1.0.0", "created_at": "2026-11-01T11:00:00"},
        {"id": ids[2], "text": "c", "predicted_label": "x", "confidence": 0.8, "model_version": "1.0.0",
         "created_at": "2026-11-02T10:00:00"},
    ])
    record_feedback(settings, ids[0], "x")
    record_feedback(settings, ids[1], "z")
    with store.connect(settings) as conn:
        days = conn.execute(text("SELECT day, captured, uncertain_rate FROM daily_training_stats ORDER BY day")).all()
        acc = conn.execute(text("SELECT labelled, correct FROM model_online_accuracy")).one()
        conn.execute(text("UPDATE queries SET review_status = 'needs-review'"))
        queue = conn.execute(text("SELECT COUNT(*) FROM training_queue")).scalar()
    assert [(str(d.day), d.captured, float(d.uncertain_rate)) for d in days] == [
        ("2026-11-01", 2, 0.5), ("2026-11-02", 1, 0.0)]
    assert (acc.labelled, acc.correct) == (2, 1)
    assert queue == 3
