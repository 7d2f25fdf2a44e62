"""Ground truth from users: feedback stored once, overrides replace, unknown ids are refused."""

import pytest
from sqlalchemy import select, update

from intelrouter import store
from intelrouter.capture import log_query
from intelrouter.config import Settings
from intelrouter.errors import NotFoundError
from intelrouter.groundtruth import record_feedback, record_override


def _labels(settings: Settings) -> list[tuple]:
    with store.connect(settings) as conn:
        return conn.execute(select(store.ml_data.c.query_id, store.ml_data.c.label, store.ml_data.c.source)).all()


def test_same_feedback_twice_is_stored_once(settings: Settings) -> None:
    qid = log_query(settings, {"text": "pizza please", "predicted_label": "order_food", "confidence": 0.8})
    assert record_feedback(settings, qid, "order_food")["written"] is True
    assert record_feedback(settings, qid, "order_food")["written"] is False
    assert _labels(settings) == [(qid, "order_food", "feedback")]


def test_override_replaces_the_earlier_label_and_resets_training_use(settings: Settings) -> None:
    qid = log_query(settings, {"text": "book a table", "predicted_label": "order_food", "confidence": 0.8})
    record_feedback(settings, qid, "order_food")
    with store.connect(settings) as conn:
        conn.execute(update(store.ml_data).values(trained_version="1.0.0"))
    record_override(settings, qid, "book_table")
    assert _labels(settings) == [(qid, "book_table", "override")]
    with store.connect(settings) as conn:
        assert conn.execute(select(store.ml_data.c.trained_version)).scalar() is None
    record_feedback(settings, qid, "order_food")  # a weaker source does not undo an override
    assert _labels(settings) == [(qid, "book_table", "override")]


def test_unknown_query_id_is_refused(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="unknown query id nope"):
        record_feedback(settings, "nope", "x")
    assert _labels(settings) == []
