"""Capture: one record, many in batches, and JSONL import that is all-or-nothing and never duplicates."""

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from intelrouter import store
from intelrouter.capture import import_conversations, log_queries, log_query
from intelrouter.config import Settings
from intelrouter.errors import InputError


def _count(settings: Settings) -> int:
    with store.connect(settings) as conn:
        return conn.execute(select(func.count()).select_from(store.queries)).scalar()


def _conversations(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"order {i} pizzas", "user_id": f"u{i % 3}", "language": "en",
                                 "predicted_label": "order_food", "confidence": 0.5 + i / (2 * n),
                                 "provider": "teacher", "model_version": "t-1",
                                 "timestamp": f"2026-11-0{1 + i % 9}T12:00:00+02:00"}) + "\n")
    return path


def test_log_one_and_many_in_batches(settings: Settings) -> None:
    qid = log_query(settings, {"text": "hello", "predicted_label": "greet", "confidence": 0.7})
    rows = [{"text": f"t{i}", "predicted_label": "x", "confidence": 0.5} for i in range(2500)]
    assert log_queries(settings, rows, batch_size=1000) == 2500
    assert _count(settings) == 2501
    assert log_query(settings, {"id": qid, "text": "hello", "predicted_label": "greet", "confidence": 0.7}) == qid
    assert _count(settings) == 2501  # the same id again adds nothing


def test_import_twice_adds_nothing_and_converts_time_to_utc(settings: Settings, tmp_path: Path) -> None:
    path = _conversations(tmp_path / "conv.jsonl", 40)
    assert import_conversations(settings, path) == (40, 40)
    assert import_conversations(settings, path) == (40, 0)
    with store.connect(settings) as conn:
        first = conn.execute(select(store.queries.c.created_at).order_by(store.queries.c.created_at)).first()
    assert first.created_at.hour == 10  # 12:00+02:00 stored as naive UTC


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "conv.jsonl:3: not valid JSON"),
    (json.dumps({"text": "", "predicted_label": "x", "confidence": 0.5}), "conv.jsonl:3: text is empty"),
    (json.dumps({"text": "x" * 5000, "predicted_label": "x", "confidence": 0.5}), "conv.jsonl:3: text is 5000"),
    (json.dumps({"text": "a", "predicted_label": "x", "confidence": 1.5}), "conv.jsonl:3: confidence"),
    (json.dumps({"text": "a", "predicted_label": "x", "confidence": 0.5, "timestamp": "yesterday"}),
     "conv.jsonl:3: created_at"),
])
def test_a_bad_line_names_its_number_and_writes_nothing(
    settings: Settings, tmp_path: Path, line: str, message: str
) -> None:
    path = _conversations(tmp_path / "conv.jsonl", 2)
    with path.open("a") as fh:
        fh.write(line + "\n")
    with pytest.raises(InputError, match=message):
        import_conversations(settings, path)
    assert _count(settings) == 0


def test_outcomes_are_stored_on_their_queries_or_not_at_all(settings: Settings) -> None:
    from intelrouter.capture import record_outcomes
    from intelrouter.errors import NotFoundError

    log_queries(settings, [{"id": f"q{i}", "text": f"order {i} pizzas", "predicted_label": "order_food",
                            "confidence": 0.9} for i in range(2)])
    outcome = {"query_id": "q0", "route_taken": "llm", "label": "order_food", "confidence": 0.8, "provider": "llm"}
    assert record_outcomes(settings, [outcome, {"query_id": "q1", "route_taken": "orders-api"}]) == 2
    assert record_outcomes(settings, [outcome]) == 1  # the same outcome again changes nothing
    with pytest.raises(NotFoundError, match="unknown query id nope"):
        record_outcomes(settings, [{"query_id": "q1", "route_taken": "php"}, {"query_id": "nope", "route_taken": "x"}])
    with pytest.raises(InputError, match="outcome confidence"):
        record_outcomes(settings, [{"query_id": "q1", "route_taken": "php", "confidence": 3}])
    q = store.queries
    with store.connect(settings) as conn:
        rows = {r.id: r for r in conn.execute(select(q.c.id, q.c.route_taken, q.c.final_label,
                                                     q.c.final_confidence, q.c.final_provider))}
    assert tuple(rows["q0"])[1:] == ("llm", "order_food", 0.8, "llm")
    assert tuple(rows["q1"])[1:] == ("orders-api", None, None, None)  # the refused batch changed nothing
