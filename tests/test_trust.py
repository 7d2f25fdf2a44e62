"""Trust measured, not assumed: the audit sample, each provider's precision and interval, the pause and its lift."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from devservers.labelstudio import TOKEN, LabelStudioServer
from intelrouter import capture, groundtruth, report, review_project, review_pull, review_push, store
from intelrouter.config import Settings, load_settings
from intelrouter.keys import text_key
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.triage import triage
from intelrouter.trust import add_audits, in_sample, paused_providers, provider_trust, record_outcomes, wilson


def test_wilson_interval_is_scipys() -> None:
    assert wilson(28, 30) == pytest.approx((0.7868, 0.9815), abs=1e-4)
    assert wilson(75, 75)[0] == pytest.approx(0.9513, abs=1e-4)  # why 75 audits: a flawless record clears 0.95
    assert wilson(0, 0) == (0.0, 1.0)


def test_audit_sample_is_stable_and_about_the_rate() -> None:
    ids = [str(uuid.UUID(int=i)) for i in range(20_000)]
    chosen = [i for i in ids if in_sample(i, 0.02)]
    assert 0.015 < len(chosen) / len(ids) < 0.025
    assert chosen == [i for i in ids if in_sample(i, 0.02)]  # the same ids every time
    assert not any(in_sample(i, 0.0) for i in ids[:1000])


def _audited(settings: Settings, outcomes: list[bool], provider: str = "teacher") -> None:
    """Auto-approved answers of `provider`, each audited and answered: True = the human confirmed it."""
    ids = [str(uuid.uuid4()) for _ in outcomes]
    capture.log_queries(settings, [{"id": i, "text": f"audited {i}", "predicted_label": "lbl", "confidence": 0.95,
                                    "provider": provider} for i in ids])
    with store.connect(settings) as conn:
        add_audits(conn, [{"query_id": i, "kind": "sample", "provider": provider, "label": "lbl", "uncertainty": 0.5}
                          for i in ids])
        record_outcomes(conn, {i: "lbl" if ok else "other" for i, ok in zip(ids, outcomes, strict=True)})


def test_pause_triggers_below_the_floor_and_lifts_when_audits_bring_it_back(settings: Settings) -> None:
    s = settings.model_copy(update={"audit_min_samples": 20, "audit_window": 40, "provider_precision_floor": 0.7})
    _audited(s, [True] * 19)
    with store.connect(s) as conn:
        assert paused_providers(conn, s) == set()  # too few audits to judge
    _audited(s, [False] * 5)
    with store.connect(s) as conn:
        (teacher,) = provider_trust(conn, s)
    assert (teacher.audited, teacher.confirmed, teacher.precision) == (24, 19, round(19 / 24, 4))
    assert teacher.low == pytest.approx(wilson(19, 24)[0], abs=1e-4) and teacher.paused
    rep = report.collect(s)
    (alert,) = [a for a in rep.alerts if a.kind == "provider_precision"]
    assert "auto-approval from teacher is paused" in alert.message and alert.limit == 0.7
    assert rep.providers[0]["paused"] is True
    assert "| teacher | 24 | 19 |" in report.to_markdown(rep)

    _audited(s, [True] * 30)  # the newest 40: 35 confirmed, lower bound 0.74: back above
    with store.connect(s) as conn:
        (teacher,) = provider_trust(conn, s)
    assert (teacher.audited, teacher.confirmed, teacher.paused) == (40, 35, False)
    assert not [a for a in report.collect(s).alerts if a.kind == "provider_precision"]


def test_untrusted_providers_are_reported_but_never_paused(settings: Settings) -> None:
    s = settings.model_copy(update={"audit_min_samples": 5})
    _audited(s, [False] * 10, provider="cheap-llm")
    with store.connect(s) as conn:
        trust = {t.provider: t for t in provider_trust(conn, s)}
    assert set(trust) == {"teacher", "cheap-llm"}
    assert trust["cheap-llm"].precision == 0.0 and not trust["cheap-llm"].paused and not trust["cheap-llm"].trusted
    assert trust["teacher"].audited == 0 and trust["teacher"].precision is None


def test_migration_keys_waiting_queries_and_the_ledger(settings: Settings) -> None:
    store.upgrade(settings, "0002")
    with store.connect(settings, migrate=False) as conn:
        conn.execute(text(
            "INSERT INTO queries (id, created_at, text, predicted_label, confidence, uncertain, provider,"
            " review_status) VALUES"
            " ('w', '2026-11-01 00:00:00', 'Where IS my parcel?', 'x', 0.3, false, 'r', 'needs-review'),"
            " ('a', '2026-11-01 00:00:00', 'hello there', 'x', 0.9, false, 'r', 'auto-approved')"))
        conn.execute(text("INSERT INTO review_tasks (query_id, project_id, task_id, status, updated_at)"
                          " VALUES ('w', 1, 5, 'pushed', '2026-11-01 00:00:00')"))
    store.dispose_engines()
    assert store.upgrade(settings) == store.head_revision()
    with store.connect(settings) as conn:
        keys = dict(conn.execute(select(store.queries.c.id, store.queries.c.text_key)).all())
        ledger = conn.execute(select(store.review_tasks.c.text_key)).scalar()
    assert keys == {"w": text_key("where is my parcel"), "a": None} and ledger == keys["w"]

    from alembic import command

    with store.get_engine(settings).begin() as conn:  # and back down, views kept
        cfg = store._alembic_config(settings.db_url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert store.current_revision(settings) == "0002"
    with store.connect(settings, migrate=False) as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM training_queue")).scalar() == 1
    store.dispose_engines()
    assert store.upgrade(settings) == store.head_revision()


# --- through a real Label Studio --------------------------------------------------------------------------------


@pytest.fixture
def ls(label_studio: LabelStudioServer) -> Iterator[LabelStudioClient]:
    """A client acting as the reviewer."""
    with LabelStudioClient(label_studio.url, TOKEN) as client:
        yield client


def _teacher_answers(settings: Settings, n: int, tag: str) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    capture.log_queries(settings, [{"id": i, "text": f"teacher answer {tag} {k}", "predicted_label": "lbl_a",
                                    "confidence": 0.95, "provider": "teacher", "model_version": "teacher-1"}
                                   for k, i in enumerate(ids)])
    return ids


def _answer(ls: LabelStudioClient, project_id: int, label_of: Any) -> list[dict[str, Any]]:
    tasks = [t for page in ls.iter_tasks(project_id, include=("id", "data", "predictions", "total_annotations"))
             for t in page if not t.get("total_annotations")]
    for task in tasks:
        choice = label_of(task)
        ls.create_annotation(task["id"], [{"from_name": "label", "to_name": "text", "type": "choices",
                                           "value": {"choices": [choice]}}])
    return tasks


def _status(settings: Settings, ids: list[str]) -> set[tuple[str, str | None]]:
    q, m = store.queries, store.ml_data
    with store.connect(settings) as conn:
        joined = q.outerjoin(m, m.c.query_id == q.c.id)
        return set(conn.execute(select(q.c.review_status, m.c.source).select_from(joined).where(q.c.id.in_(ids))).all())


@pytest.mark.labelstudio
def test_provider_pause_triggers_and_lifts_through_review(
    settings: Settings, label_studio: LabelStudioServer, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", TOKEN)
    base = load_settings()
    with store.connect(base) as conn:  # both labels exist, so the project offers them
        groundtruth.insert_labels(conn, [{"text": "seed a", "label": "lbl_a"}, {"text": "seed b", "label": "lbl_b"}],
                                  "import", shares=base.split_shares)
    project_id = review_project.setup_project(base, title=f"trust-{uuid.uuid4().hex[:8]}")
    s = base.model_copy(update={"label_studio_project_id": project_id, "audit_rate": 1.0, "audit_min_samples": 10,
                                "audit_window": 10, "provider_precision_floor": 0.6})

    first = _teacher_answers(s, 10, "one")  # all audited (rate 1): labels kept meanwhile, and sent to review
    assert triage(s).audit_sampled == 10
    assert _status(s, first) == {(store.NEEDS_REVIEW, "auto-approved")}
    assert review_push.push(s).pushed == 10
    tasks = _answer(ls, project_id, lambda t: "lbl_a" if int(t["data"]["text"].split()[-1]) % 2 else "lbl_b")
    assert all(not t.get("predictions") for t in tasks)  # blind: the audited label is not pre-selected
    review_pull.pull(s)
    assert _status(s, first) == {(store.APPROVED, "label-studio")}
    with store.connect(s) as conn:
        (teacher,) = provider_trust(conn, s)
    assert (teacher.audited, teacher.confirmed, teacher.paused) == (10, 5, True)
    assert [a.kind for a in report.collect(s).alerts] == ["provider_precision"]

    paused = _teacher_answers(s, 10, "two")  # paused: to review instead, nothing auto-approved
    daily = triage(s)
    assert (daily.paused_providers, daily.paused_to_review, daily.auto_approved) == (["teacher"], 10, 0)
    assert _status(s, paused) == {(store.NEEDS_REVIEW, None)}
    review_push.push(s)
    _answer(ls, project_id, lambda t: "lbl_a")  # the reviewer confirms every one
    review_pull.pull(s)
    with store.connect(s) as conn:
        (teacher,) = provider_trust(conn, s)
    assert (teacher.audited, teacher.confirmed, teacher.paused) == (10, 10, False)  # the newest 10: lifted
    assert not report.collect(s).alerts

    after = _teacher_answers(s, 3, "three")
    assert triage(s.model_copy(update={"audit_rate": 0.0})).auto_approved == 3
    assert _status(s, after) == {(store.AUTO_APPROVED, "auto-approved")}
