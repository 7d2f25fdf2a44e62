"""Capture: one record, many in batches, and JSONL import that is all-or-nothing and never duplicates."""

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from intelrouter import store
from intelrouter.capture import import_conversations, log_queries, log_query, record_outcomes
from intelrouter.config import Settings
from intelrouter.errors import InputError, NotFoundError


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


def _stored(settings: Settings, *columns: str) -> dict[str, tuple]:
    q = store.queries
    with store.connect(settings) as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(select(q.c.id, *(q.c[c] for c in columns)))}


def test_phone_number_is_the_user_id_when_there_is_none_and_is_stored_hashed(settings: Settings) -> None:
    log_queries(settings, [
        {"id": "a", "text": "pizza delivery", "phoneNumber": "+4915112345", "predicted_label": "food",
         "confidence": 0.9},  # seed 004's NLU clients
        {"id": "b", "text": "pizza delivery", "phone_number": 4915112345, "predicted_label": "food", "confidence": 0.9},
        {"id": "c", "text": "pizza", "user_id": "u-1", "phoneNumber": "+4915112345", "predicted_label": "food",
         "confidence": 0.9},
    ])
    rows = _stored(settings, "user_hash")
    assert rows["a"] == (store.hash_identifier("+4915112345", settings.hash_salt),)
    assert rows["b"] == (store.hash_identifier("4915112345", settings.hash_salt),)
    assert rows["c"] == (store.hash_identifier("u-1", settings.hash_salt),)  # the user id wins


def test_capture_lines_carry_the_callers_outcome(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "conv.jsonl"
    base = {"predicted_label": "UNCERTAIN", "top_label": "food", "confidence": 0.3, "uncertain": True}
    path.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "text": "pizza", **base, "route_taken": " LLM ", "final_label": "order_food",
         "final_confidence": 0.97, "final_provider": "teacher"},
        {"id": "b", "text": "where is it", **base, "route_taken": "opensearch"},
        {"id": "c", "text": "hello", **base},
    ]) + "\n")
    assert import_conversations(settings, path) == (3, 3)
    rows = _stored(settings, "route_taken", "final_label", "final_confidence", "final_provider")
    assert rows == {"a": ("llm", "order_food", 0.97, "teacher"), "b": ("opensearch", None, None, None),
                    "c": (None, None, None, None)}


@pytest.mark.parametrize(("extra", "message"), [
    ({"route_taken": ""}, "conv.jsonl:1: route_taken"),
    ({"route_taken": "x" * 40}, "conv.jsonl:1: route_taken"),
    ({"route_taken": "llm", "final_provider": "p" * 70}, "conv.jsonl:1: final_provider"),
    ({"route_taken": "llm", "final_confidence": 2}, "conv.jsonl:1: final_confidence"),
])
def test_a_bad_outcome_on_a_capture_line_writes_nothing(settings: Settings, tmp_path: Path, extra: dict,
                                                        message: str) -> None:
    path = tmp_path / "conv.jsonl"
    path.write_text(json.dumps({"text": "a", "predicted_label": "x", "confidence": 0.5, **extra}) + "\n")
    with pytest.raises(InputError, match=message):
        import_conversations(settings, path)
    assert _count(settings) == 0


def test_record_outcomes_updates_by_query_id_and_the_last_report_wins(settings: Settings) -> None:
    log_queries(settings, [{"id": q, "text": q, "predicted_label": "x", "confidence": 0.5} for q in ("a", "b", "c")])
    outcomes = [{"query_id": "a", "route_taken": "opensearch"},
                {"query_id": "b", "route_taken": "LLM", "final_label": "order_food", "final_confidence": 0.9,
                 "final_provider": "teacher"},
                {"query_id": "a", "route_taken": "php"}]  # the caller corrected itself: the last one counts
    assert record_outcomes(settings, outcomes) == 2
    want = {"a": ("php", None, None, None), "b": ("llm", "order_food", 0.9, "teacher"), "c": (None, None, None, None)}
    assert _stored(settings, "route_taken", "final_label", "final_confidence", "final_provider") == want
    assert record_outcomes(settings, outcomes) == 2  # the same reports again change nothing
    assert _stored(settings, "route_taken", "final_label", "final_confidence", "final_provider") == want
    assert record_outcomes(settings, []) == 0
    assert record_outcomes(settings, [{"query_id": "b", "route_taken": "human", "label": "cancel_order",
                                       "confidence": 1, "provider": "agent-7"}]) == 1
    assert _stored(settings, "route_taken", "final_label", "final_provider")["b"] == ("human", "cancel_order",
                                                                                      "agent-7")


@pytest.mark.parametrize(("outcome", "error", "message"), [
    ({"query_id": "nope", "route_taken": "llm"}, NotFoundError, "unknown query id nope: nothing was recorded"),
    ({"query_id": "a"}, InputError, r"outcome route_taken: Field required \(outcome #2\); nothing was recorded"),
    ({"query_id": "a", "route_taken": "llm", "lable": "x"}, InputError, "outcome lable: Extra inputs"),
    ({"query_id": "a", "route_taken": "llm", "confidence": -1}, InputError, "outcome confidence"),
    ({"query_id": "a", "route_taken": 7}, InputError, "outcome route_taken"),
])
def test_a_bad_or_unknown_outcome_records_nothing(settings: Settings, outcome: dict, error: type,
                                                  message: str) -> None:
    log_queries(settings, [{"id": "a", "text": "a", "predicted_label": "x", "confidence": 0.5}])
    with pytest.raises(error, match=message):
        record_outcomes(settings, [{"query_id": "a", "route_taken": "llm"}, outcome])
    assert _stored(settings, "route_taken") == {"a": (None,)}
