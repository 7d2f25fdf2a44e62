"""Triage: the seed's rule, idempotent runs over a window, the daily report and its alert."""

import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, select

from intelrouter import store
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.groundtruth import upsert_label
from intelrouter.keys import text_key
from intelrouter.triage import decide, triage
from intelrouter.trust import add_audits, in_sample, record_outcomes


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


# --- issue 16: text keys, known texts, the audit sample, the provider pause -------------------------------------


def _queries(settings: Settings) -> dict[str, Any]:
    with store.connect(settings) as conn:
        return {r.id: r for r in conn.execute(select(store.queries))}


def _labels(settings: Settings) -> dict[str, Any]:
    with store.connect(settings) as conn:
        return {r.query_id: r for r in conn.execute(select(store.ml_data))}


def test_triage_keys_every_query_it_triages(settings: Settings) -> None:
    _seed(settings)
    triage(settings)
    assert {q.id: q.text_key for q in _queries(settings).values()} == {f"q{i}": text_key(f"text {i}")
                                                                        for i in range(5)}


def test_a_text_a_human_answered_is_settled_at_triage(settings: Settings) -> None:
    log_queries(settings, [{"id": "answered", "text": "Track my order", "predicted_label": "x", "confidence": 0.3},
                           {"id": "refused", "text": "sing a song", "predicted_label": "x", "confidence": 0.3}])
    triage(settings)
    with store.connect(settings) as conn:
        upsert_label(conn, query_id="answered", text="Track my order", label="track_order", source="label-studio",
                     reviewer="r@x", shares=settings.split_shares)
        conn.execute(insert(store.review_tasks).values(query_id="refused", project_id=1, task_id=9, status="completed",
                                                       text_key=text_key("sing a song"), updated_at=store.utcnow()))
    log_queries(settings, [{"id": "copy", "text": "track my ORDER!", "predicted_label": "x", "confidence": 0.2},
                           {"id": "copy2", "text": "Sing a song.", "predicted_label": "x", "confidence": 0.2},
                           {"id": "confident", "text": "track my order", "predicted_label": "y", "confidence": 0.99,
                            "provider": "teacher"}])
    report = triage(settings)
    assert (report.triaged, report.resolved_known, report.needs_review, report.auto_approved) == (3, 2, 0, 1)
    rows, gt = _queries(settings), _labels(settings)
    assert (rows["copy"].review_status, rows["copy2"].review_status) == (store.APPROVED, store.REJECTED)
    assert (gt["copy"].label, gt["copy"].source, gt["copy"].reviewer) == (
        "track_order", "label-studio", "resolved from query answered")
    assert "copy2" not in gt
    assert gt["confident"].source == "auto-approved"  # an auto-approval is not a question waiting for a human

    log_queries(settings, [{"id": "copy3", "text": "TRACK MY ORDER", "predicted_label": "x", "confidence": 0.2}])
    off = settings.model_copy(update={"resolve_known_texts": False})
    assert triage(off).needs_review == 1 and _queries(settings)["copy3"].review_status == store.NEEDS_REVIEW


def test_audit_sample_goes_to_review_and_keeps_its_auto_approved_label(settings: Settings) -> None:
    sampled = settings.model_copy(update={"audit_rate": 0.3})
    log_queries(settings, [{"id": f"t{i}", "text": f"question {i}", "predicted_label": "lbl", "confidence": 0.95,
                            "provider": "teacher"} for i in range(60)])
    report = triage(sampled)
    expected = {f"t{i}" for i in range(60) if in_sample(f"t{i}", 0.3)}
    assert 8 <= len(expected) <= 30 and report.audit_sampled == len(expected)
    rows, gt = _queries(settings), _labels(settings)
    assert {q for q, r in rows.items() if r.review_status == store.NEEDS_REVIEW} == expected
    assert {rows[q].review_priority for q in expected} == {5}
    assert set(gt) == set(rows) and {r.source for r in gt.values()} == {"auto-approved"}  # label kept meanwhile
    with store.connect(settings) as conn:
        audits = conn.execute(select(store.audits)).all()
    assert {(a.query_id, a.kind, a.provider, a.label, a.outcome) for a in audits} == {
        (q, "sample", "teacher", "lbl", None) for q in expected}
    assert triage(sampled).triaged == 0  # a re-run picks nothing new


def test_a_paused_provider_sends_its_confident_answers_to_review(settings: Settings) -> None:
    strict = settings.model_copy(update={"audit_min_samples": 10, "audit_rate": 0.0})
    log_queries(settings, [{"id": f"a{i}", "text": f"audited {i}", "predicted_label": "lbl", "confidence": 0.9,
                            "provider": "teacher"} for i in range(10)])
    assert triage(strict).auto_approved == 10
    with store.connect(settings) as conn:  # ten answered audits of the teacher, five of them wrong
        add_audits(conn, [{"query_id": f"a{i}", "kind": "sample", "provider": "teacher", "label": "lbl",
                           "uncertainty": 0.5} for i in range(10)])
        record_outcomes(conn, {f"a{i}": "lbl" if i % 2 else "other" for i in range(10)})
    log_queries(settings, [{"id": "new", "text": "fresh question", "predicted_label": "lbl", "confidence": 0.97,
                            "provider": "teacher"}])
    report = triage(strict)
    assert report.paused_providers == ["teacher"] and report.paused_to_review == 1
    row = _queries(settings)["new"]
    assert (row.review_status, row.review_priority) == (store.NEEDS_REVIEW, 5)
    assert "new" not in _labels(settings)  # nothing auto-approved while paused
