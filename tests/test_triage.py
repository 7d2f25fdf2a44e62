"""Triage: the seed's rule, idempotent runs over a window, the daily report and its alert."""

import json
from datetime import datetime

import pytest
from sqlalchemy import select

from intelrouter import store
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.triage import decide, triage


@pytest.mark.parametrize(("confidence", "provider", "expected"), [
    (0.85, "teacher", ("auto-approved", None)),
    (0.99, "intelrouter", ("needs-review", 5)),  # the router's own guesses are never auto-approved
    (0.849, "teacher", ("needs-review", 5)),
    (0.70, "teacher", ("needs-review", 5)),
    (0.6999, "teacher", ("needs-review", 2)),
])
def test_rule_follows_seed_004(confidence: float, provider: str, expected: tuple) -> None:
    assert decide(confidence, provider, load_settings()) == expected


def test_trusted_providers_and_thresholds_are_settings() -> None:
    s = load_settings(trusted_providers=["intelrouter"], auto_approve_threshold=0.9, review_threshold=0.5)
    assert decide(0.95, "intelrouter", s) == ("auto-approved", None)
    assert decide(0.6, "teacher", s) == ("needs-review", 5)


def _seed(settings: Settings) -> None:
    rows = []
    for i, (conf, provider) in enumerate([(0.95, "teacher"), (0.9, "intelrouter"), (0.75, "teacher"),
                                          (0.2, "teacher"), (0.99, "teacher")]):
        rows.append({"id": f"q{i}", "text": f"text {i}", "predicted_label": "lbl", "confidence": conf,
                     "provider": provider, "uncertain": conf < 0.6, "created_at": f"2026-11-0{i + 1}T08:00:00"})
    log_queries(settings, rows)


def test_triage_is_idempotent_and_writes_ground_truth_once(settings: Settings) -> None:
    _seed(settings)
    first = triage(settings)
    assert (first.captured, first.auto_approved, first.needs_review) == (5, 2, 3)
    second = triage(settings)
    assert (second.triaged, second.auto_approved, second.needs_review) == (0, 0, 0)
    with store.connect(settings) as conn:
        m = conn.execute(select(store.ml_data.c.query_id, store.ml_data.c.source)).all()
        q = dict(conn.execute(select(store.queries.c.id, store.queries.c.review_priority)).all())
    assert sorted(m) == [("q0", "auto-approved"), ("q4", "auto-approved")]
    assert q == {"q0": None, "q1": 5, "q2": 5, "q3": 2, "q4": None}


def test_window_limits_what_is_triaged_and_report_is_written(settings: Settings) -> None:
    _seed(settings)
    report = triage(settings, datetime(2026, 11, 3), datetime(2026, 11, 5))
    assert (report.captured, report.triaged, report.date) == (2, 2, "2026-11-04")
    saved = json.loads((settings.logs_dir / "daily-report-2026-11-04.json").read_text())
    assert saved["needs_review"] == 2 and saved["uncertain_rate"] == 0.5 and saved["alert"] is False
    assert set(saved) >= {"captured", "auto_approved", "needs_review", "approved_waiting_for_training",
                          "auto_approval_rate", "uncertain_rate", "alert"}
    assert triage(settings).triaged == 3


def test_alert_at_the_waiting_threshold(settings: Settings) -> None:
    _seed(settings)
    s = settings.model_copy(update={"alert_waiting": 2})
    assert triage(s).alert is True


def test_an_uncertain_answer_is_never_ground_truth(settings: Settings) -> None:
    log_queries(settings, [{"id": "u", "text": "hmm", "predicted_label": "UNCERTAIN", "confidence": 0.9,
                            "provider": "teacher"}])
    report = triage(settings)
    assert (report.auto_approved, report.needs_review) == (0, 1)
    with store.connect(settings) as conn:
        assert conn.execute(select(store.queries.c.review_priority)).scalar() == 2
        assert conn.execute(select(store.ml_data.c.id)).first() is None


def test_a_trusted_fallback_answer_becomes_ground_truth(settings: Settings) -> None:
    """The router fell back; the caller's fallback (the teacher) answered confidently: that answer is approved."""
    from intelrouter.capture import record_outcomes

    rows = [{"id": f"f{i}", "text": f"book a flight to city {i}", "predicted_label": "UNCERTAIN",
             "top_label": "weather", "confidence": 0.4, "uncertain": True} for i in range(4)]
    log_queries(settings, rows)
    answers = [("book_flight", 0.95, "teacher"), ("book_flight", 0.60, "teacher"), ("book_flight", 0.99, "php"),
               ("UNCERTAIN", 0.99, "teacher")]
    record_outcomes(settings, [{"query_id": f"f{i}", "route_taken": "fallback", "label": label, "confidence": conf,
                                "provider": provider} for i, (label, conf, provider) in enumerate(answers)])
    report = triage(settings)
    assert (report.auto_approved, report.needs_review) == (1, 3)
    with store.connect(settings) as conn:
        truth = conn.execute(select(store.ml_data.c.query_id, store.ml_data.c.label, store.ml_data.c.confidence,
                                    store.ml_data.c.source)).all()
        status = dict(conn.execute(select(store.queries.c.id, store.queries.c.review_priority)).all())
    assert truth == [("f0", "book_flight", 0.95, "auto-approved")]  # the fallback's label, not the router's guess
    assert status == {"f0": None, "f1": 2, "f2": 2, "f3": 2}  # the rest wait for review (the router was unsure)


def test_the_canary_answers_are_reviewed_first(settings: Settings) -> None:
    """The canary check judges @staging on human labels of its answers: they go to the front of the review queue."""
    log_queries(settings, [{"id": f"{variant}-{i}", "text": f"q {variant} {i}", "predicted_label": "easy",
                            "confidence": 0.8, "variant": variant} for variant in ("production", "staging")
                           for i in range(2)])
    triage(settings)
    with store.connect(settings) as conn:
        priority = dict(conn.execute(select(store.queries.c.id, store.queries.c.review_priority)).all())
    assert priority == {"production-0": 5, "production-1": 5, "staging-0": 2, "staging-1": 2}
