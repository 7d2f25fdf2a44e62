"""Human review against a real Label Studio: setup, push, annotate as a reviewer would, pull, crash, resume."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from training_support import on_shared_tracking, shared_tracking_uri  # noqa: F401 - shared_tracking_uri is a fixture

from devservers.labelstudio import TOKEN, USERNAME, LabelStudioServer
from devservers.ports import free_port
from intelrouter import capture, groundtruth, labelstudio, review_project, review_pull, review_push, store
from intelrouter.config import Settings, load_settings
from intelrouter.errors import ConfigError, LabelStudioError
from intelrouter.keys import text_key
from intelrouter.labelstudio import LabelStudioClient, LabelStudioUnavailable
from intelrouter.names import UNCERTAIN

# --- fixtures and helpers -----------------------------------------------------------------------------


@pytest.fixture
def ls_settings(settings: Settings, label_studio: LabelStudioServer, shared_tracking_uri: str,  # noqa: F811
                monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on a fresh database pointing at the session's Label Studio (also exported for CLI runs), and on
    the session's MLflow store (a push looks up the model version that answered; a new store costs seconds)."""
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", TOKEN)
    return on_shared_tracking(monkeypatch, shared_tracking_uri)


@pytest.fixture
def ls(label_studio: LabelStudioServer) -> Iterator[LabelStudioClient]:
    """A client acting as the reviewer (and for looking at what the sync did)."""
    with LabelStudioClient(label_studio.url, TOKEN) as client:
        yield client


def with_project(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Create a review project of its own for this test and return settings that name it."""
    project_id = review_project.setup_project(settings, title=f"test-{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_PROJECT_ID", str(project_id))
    return load_settings()


def seed(settings: Settings, rows: list[dict[str, Any]]) -> list[str]:
    """Log queries, then set their triage outcome directly (triage itself is another module's job)."""
    records = []
    for i, row in enumerate(rows):
        records.append({
            "id": row.get("id") or str(uuid.uuid4()),
            "text": row.get("text", f"query number {i}"),
            "language": row.get("language", "en"),
            "predicted_label": row.get("predicted_label", row.get("top_label", "book_flight")),
            "top_label": row.get("top_label"),
            "confidence": row["confidence"],
            "uncertain": row.get("predicted_label") == UNCERTAIN,
            "model_version": row.get("model_version", "7"),
            "user_id": row.get("user_id"),
        })
    capture.log_queries(settings, records)
    q = store.queries
    with store.connect(settings) as conn:
        for rec, row in zip(records, rows, strict=True):
            status = row.get("status", store.NEEDS_REVIEW)
            priority = row.get("priority", 2 if row["confidence"] < 0.7 else 5)
            priority = priority if status == store.NEEDS_REVIEW else None
            conn.execute(update(q).where(q.c.id == rec["id"]).values(review_status=status, review_priority=priority))
    return [r["id"] for r in records]


def needs_review(n: int, label: str = "book_flight") -> list[dict[str, Any]]:
    """n needs-review queries with distinct confidences."""
    return [{"top_label": label, "confidence": round(0.05 + 0.9 * i / max(n, 1), 6)} for i in range(n)]


def tasks_of(ls: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    """Every task of a project with data and predictions, in id order."""
    tasks, page = [], 1
    while True:
        resp = ls.request("GET", "/api/tasks", params={"project": project_id, "fields": "all", "page": page,
                                                        "page_size": 500})
        tasks += resp["tasks"]
        if len(resp["tasks"]) < 500:
            return sorted(tasks, key=lambda t: t["id"])
        page += 1


def tasks_per_query(ls: LabelStudioClient, project_id: int) -> Counter[str]:
    """How many Label Studio tasks each query id has (Label Studio itself never de-duplicates)."""
    return Counter(t["data"]["query_id"] for page in ls.iter_tasks(project_id) for t in page)


def choice(label: str, comment: str | None = None) -> list[dict[str, Any]]:
    """An annotation result as the labeling UI submits it."""
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
    if comment:
        result.append({"from_name": "comment", "to_name": "text", "type": "textarea", "value": {"text": [comment]}})
    return result


def ledger(settings: Settings) -> dict[str, Any]:
    """review_tasks rows by query id."""
    with store.connect(settings) as conn:
        return {r.query_id: r for r in conn.execute(select(store.review_tasks))}


def labels(settings: Settings) -> dict[str, Any]:
    """ml_data rows by query id."""
    with store.connect(settings) as conn:
        return {r.query_id: r for r in conn.execute(select(store.ml_data))}


def statuses(settings: Settings) -> dict[str, str]:
    """review_status of every query."""
    with store.connect(settings) as conn:
        return dict(conn.execute(select(store.queries.c.id, store.queries.c.review_status)).all())


# --- no server needed -------------------------------------------------------------------------------


def test_labeling_config_offers_each_label_once_plus_none_and_comment() -> None:
    labels_in = ["weather", 'a&b "quoted" <label>', "book_flight", "weather"]
    root = ET.fromstring(review_project.labeling_config(labels_in))
    choices = [c.get("value") for c in root.iter("Choice")]
    assert choices == [review_project.NONE_CHOICE, "a&b \"quoted\" <label>", "book_flight", "weather"]
    quick, full = root.iter("Choices")
    assert full.get("name") == "label" and full.get("choice") == "single-radio"
    (comment,) = root.iter("TextArea")
    assert comment.get("name") == "comment"
    # on top: the model's line, the text, then its suggestions as quick picks, which a full-list pick hides
    assert [el.tag for el in root if el.tag != "Style"][:3] == ["Header", "Text", "Choices"]
    assert root.find("Header").get("value") == "$suggestion_line"
    assert (quick.get("name"), quick.get("value"), quick.get("choice")) == ("quick", "$suggestions", "single-radio")
    assert (quick.get("visibleWhen"), quick.get("whenTagName"), quick.get("required")) == (
        "choice-unselected", "label", "true")
    assert next(full.iter("Choice")).get("hotkey") == "0"


def test_missing_settings_fail_with_one_clear_line(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTELROUTER_LABEL_STUDIO")}
    run = subprocess.run([sys.executable, "-m", "cli", "review", "push", "--project-id", "1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: INTELROUTER_LABEL_STUDIO_URL is not set: give the Label Studio base URL"
    ]
    env["INTELROUTER_LABEL_STUDIO_URL"] = "http://127.0.0.1:9"
    env["INTELROUTER_LABEL_STUDIO_API_KEY"] = TOKEN
    run = subprocess.run([sys.executable, "-m", "cli", "review", "pull"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1
    assert "INTELROUTER_LABEL_STUDIO_PROJECT_ID is not set" in run.stderr
    with pytest.raises(ConfigError, match="INTELROUTER_LABEL_STUDIO_API_KEY"):
        LabelStudioClient("http://127.0.0.1:9", "")
    with pytest.raises(ConfigError, match="give a URL such as http://"):
        LabelStudioClient("127.0.0.1:8080", TOKEN)


def test_unreachable_server_retries_then_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(labelstudio, "_backoff_sleep", waits.append)
    with LabelStudioClient(f"http://127.0.0.1:{free_port()}", TOKEN, retries=4, backoff=0.5) as client:
        with pytest.raises(LabelStudioUnavailable, match="cannot reach Label Studio .* after 4 attempts"):
            client.whoami()
    assert waits == [0.5, 1.0, 2.0]  # exponential back-off between the attempts


# --- against the real server ------------------------------------------------------------------------


@pytest.mark.labelstudio
def test_setup_creates_the_project_then_updates_it(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(ls_settings, [
        {"top_label": "book_flight", "confidence": 0.4},
        {"top_label": "cancel_order", "confidence": 0.6},
        {"predicted_label": UNCERTAIN, "top_label": "weather", "confidence": 0.2},
    ])
    with store.connect(ls_settings) as conn:
        groundtruth.upsert_label(conn, query_id=None, text="what is my balance", label="balance", source="import",
                                 shares=ls_settings.split_shares)
    title = f"setup-{uuid.uuid4().hex[:8]}"
    project_id = review_project.setup_project(ls_settings, title=title)
    project = ls.get_project(project_id)
    assert review_project.project_labels(project) == {"balance", "book_flight", "cancel_order", "weather"}
    assert review_project.NONE_CHOICE in project["parsed_label_config"]["label"]["labels"]
    assert project["parsed_label_config"]["comment"]["type"] == "TextArea"

    assert review_project.setup_project(ls_settings, title=title) == project_id  # found by title, not created twice
    seed(ls_settings, [{"top_label": "transfer", "confidence": 0.5}])
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_PROJECT_ID", str(project_id))
    assert review_project.setup_project(load_settings()) == project_id
    assert review_project.project_labels(ls.get_project(project_id)) == {"balance", "book_flight", "cancel_order",
                                                                  "transfer", "weather"}


@pytest.mark.labelstudio
def test_push_sends_needs_review_by_priority_then_confidence_with_predictions(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, [
        {"top_label": "book_flight", "confidence": 0.80, "priority": 5},  # 0
        {"top_label": "cancel_order", "confidence": 0.40, "priority": 2, "language": "de"},  # 1
        {"top_label": "book_flight", "confidence": 0.20, "priority": 2},  # 2
        {"top_label": "cancel_order", "confidence": 0.72, "priority": 5},  # 3
        {"top_label": "book_flight", "confidence": 0.95, "status": store.AUTO_APPROVED},  # 4: not for review
        {"top_label": "book_flight", "confidence": 0.50, "status": store.PENDING},  # 5: not triaged yet
        {"predicted_label": UNCERTAIN, "top_label": "weather", "confidence": 0.10, "priority": 2},  # 6
    ])
    settings = with_project(ls_settings, monkeypatch)
    result = review_push.push(settings)
    assert (result.selected, result.pushed, result.adopted) == (5, 5, 0)

    tasks = tasks_of(ls, settings.label_studio_project_id)
    assert [t["data"]["query_id"] for t in tasks] == [ids[6], ids[2], ids[1], ids[3], ids[0]]
    by_query = {t["data"]["query_id"]: t for t in tasks}
    # version 7 is not in the registry: the task shows the stored guess and confidence only
    assert by_query[ids[1]]["data"] == {
        "text": "query number 1", "language": "de", "priority": 2, "query_id": ids[1],
        "text_key": text_key("query number 1"), "count": 1, "users": 0, "languages": "de", "value": 0.6,
        "model_version": "7", "guess": "cancel_order", "confidence": 0.4, "suggestion_line": "Model: cancel_order 40 %",
        "suggestions": [{"value": "cancel_order", "html": "cancel_order <small>40 %</small>", "hotkey": "1",
                         "hint": "model confidence 40 % (hotkey 1)"}]}
    (prediction,) = by_query[ids[6]]["predictions"]
    # one prediction of the project's constant version, scored by its place in the queue (tier 2, value 0.9)
    assert prediction["model_version"] == review_project.ORDER_VERSION
    assert prediction["score"] == pytest.approx(1 / 1.9, abs=1e-6)
    assert ls.get_project(settings.label_studio_project_id)["model_version"] == review_project.ORDER_VERSION
    assert prediction["result"][0]["value"] == {"choices": ["weather"]}  # the top label, not UNCERTAIN
    assert prediction["result"][0]["from_name"] == "quick"  # pre-selected among the quick picks, on top
    assert by_query[ids[3]]["predictions"][0]["result"][0]["value"] == {"choices": ["cancel_order"]}

    rows = ledger(settings)
    assert set(rows) == {ids[i] for i in (0, 1, 2, 3, 6)}
    assert all(rows[q].status == "pushed" and rows[q].task_id == by_query[q]["id"] for q in rows)
    assert rows[ids[0]].priority == 5 and rows[ids[2]].priority == 2


@pytest.mark.labelstudio
def test_repush_sends_only_what_is_missing(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, needs_review(5))
    settings = with_project(ls_settings, monkeypatch)
    first = review_push.push(settings, limit=2)
    assert first.pushed == 2
    assert set(tasks_per_query(ls, settings.label_studio_project_id)) == {ids[0], ids[1]}  # least confident
    assert review_push.push(settings).pushed == 3
    assert review_push.push(settings).pushed == 0
    new = seed(settings, [{"top_label": "new_intent", "confidence": 0.3, "text": "a question never seen"}])
    assert review_push.push(settings).pushed == 1
    per_query = tasks_per_query(ls, settings.label_studio_project_id)
    assert set(per_query) == set(ids + new) and set(per_query.values()) == {1}
    # the new label was added to the project's choices so the pre-annotation is valid
    assert "new_intent" in review_project.project_labels(ls.get_project(settings.label_studio_project_id))


@pytest.mark.labelstudio
def test_pull_stores_labels_statuses_and_disagreement_once(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, [
        {"top_label": "book_flight", "confidence": 0.3, "text": "fly me to rome"},
        {"top_label": "book_flight", "confidence": 0.4, "text": "cancel my order"},
        {"top_label": "cancel_order", "confidence": 0.5},
        {"top_label": "cancel_order", "confidence": 0.6},
        {"top_label": "cancel_order", "confidence": 0.65},  # left unanswered
    ])
    settings = with_project(ls_settings, monkeypatch)
    review_push.push(settings)
    task = {t["data"]["query_id"]: t["id"] for t in tasks_of(ls, settings.label_studio_project_id)}
    ls.create_annotation(task[ids[0]], choice("book_flight"))  # confirms the model
    ls.create_annotation(task[ids[1]], choice("cancel_order", comment="clearly a cancellation"))  # corrects it
    ls.create_annotation(task[ids[2]], [], was_cancelled=True)  # skipped
    ls.create_annotation(task[ids[3]], choice(review_project.NONE_CHOICE, comment="track_parcel"))  # none fits

    result = review_pull.pull(settings)
    assert (result.approved, result.rejected, result.skipped, result.disagreements) == (2, 1, 1, 1)
    gt = labels(settings)
    assert set(gt) == {ids[0], ids[1]}
    assert gt[ids[0]].label == "book_flight" and gt[ids[1]].label == "cancel_order"
    assert {r.source for r in gt.values()} == {"label-studio"} and {r.reviewer for r in gt.values()} == {USERNAME}
    assert gt[ids[1]].text == "cancel my order"
    st = statuses(settings)
    assert [st[i] for i in ids] == [store.APPROVED, store.APPROVED, store.REJECTED, store.REJECTED,
                                    store.NEEDS_REVIEW]
    rows = ledger(settings)
    assert [rows[i].status for i in ids] == ["completed", "completed", "skipped", "completed", "pushed"]
    assert [rows[i].agrees_with_model for i in ids[:4]] == [True, False, None, False]
    assert rows[ids[1]].human_label == "cancel_order" and rows[ids[1]].comment == "clearly a cancellation"
    assert rows[ids[3]].human_label is None and rows[ids[3]].comment == "track_parcel"
    assert all(rows[i].reviewer == USERNAME and rows[i].completed_at and rows[i].annotation_id for i in ids[:4])

    again = review_pull.pull(settings)
    assert again.written == 0 and again.unchanged == 4
    assert labels(settings) == gt and ledger(settings) == rows  # not one row rewritten


@pytest.mark.labelstudio
def test_pull_reads_quick_picks_and_the_full_list_alike(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, needs_review(5))
    settings = with_project(ls_settings, monkeypatch)
    review_push.push(settings)
    task = {t["data"]["query_id"]: t["id"] for t in tasks_of(ls, settings.label_studio_project_id)}

    def quick(label: str) -> list[dict[str, Any]]:
        return [{"from_name": "quick", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]

    ls.create_annotation(task[ids[0]], quick("book_flight"))  # Submit on the pre-selected guess
    ls.create_annotation(task[ids[1]], quick("cancel_order"))  # an alternative among the quick picks
    ls.create_annotation(task[ids[2]], choice("weather"))  # a label from the full list
    ls.create_annotation(task[ids[3]], quick("book_flight") + choice("weather"))  # both: the full list wins
    ls.create_annotation(task[ids[4]], quick("book_flight") + choice(review_project.NONE_CHOICE, comment="refund"))

    result = review_pull.pull(settings)
    assert (result.approved, result.rejected, result.skipped, result.disagreements) == (4, 1, 0, 3)
    gt = labels(settings)
    assert {q: gt[q].label for q in gt} == {ids[0]: "book_flight", ids[1]: "cancel_order", ids[2]: "weather",
                                           ids[3]: "weather"}
    rows = ledger(settings)
    assert [rows[i].agrees_with_model for i in ids] == [True, False, False, False, False]
    assert rows[ids[4]].human_label is None and rows[ids[4]].comment == "refund"
    assert statuses(settings)[ids[4]] == store.REJECTED


@pytest.mark.labelstudio
def test_pull_takes_a_corrected_answer_and_honours_limit(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, needs_review(3))
    settings = with_project(ls_settings, monkeypatch)
    review_push.push(settings)
    task = {t["data"]["query_id"]: t["id"] for t in tasks_of(ls, settings.label_studio_project_id)}
    annotation = ls.create_annotation(task[ids[0]], choice("book_flight"))
    ls.create_annotation(task[ids[1]], choice("book_flight"))
    ls.create_annotation(task[ids[2]], choice("book_flight"))

    assert review_pull.pull(settings, limit=2).written == 2
    assert review_pull.pull(settings, limit=2).written == 1
    assert review_pull.pull(settings).written == 0
    assert set(labels(settings)) == set(ids)

    ls.update_annotation(annotation["id"], choice("cancel_order"))  # the reviewer changes their mind
    result = review_pull.pull(settings)
    assert (result.approved, result.disagreements, result.unchanged) == (1, 1, 2)
    assert labels(settings)[ids[0]].label == "cancel_order"
    assert ledger(settings)[ids[0]].agrees_with_model is False


@pytest.mark.labelstudio
def test_push_interrupted_between_import_and_record_adopts_instead_of_duplicating(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 7 questions, each asked twice (the copy in capitals): 7 tasks, adopted by text key after the crash
    ids = seed(ls_settings, needs_review(7) + [{**row, "text": f"QUERY  NUMBER {i}!"}
                                               for i, row in enumerate(needs_review(7))])
    settings = with_project(ls_settings, monkeypatch)
    real = review_push._record_pushed
    calls = []

    def crash_on_second_batch(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("process killed after the import, before recording it")
        real(*args)

    monkeypatch.setattr(review_push, "_record_pushed", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="process killed"):
        review_push.push(settings, batch_size=3)
    monkeypatch.setattr(review_push, "_record_pushed", real)
    rows = ledger(settings)
    assert sorted(r.status for r in rows.values()) == ["pending"] * 6 + ["pushed"] * 6
    assert len(tasks_of(ls, settings.label_studio_project_id)) == 6  # Label Studio has batch 2

    result = review_push.push(settings, batch_size=3)
    assert (result.adopted, result.pushed, result.queued) == (3, 1, 2)
    tasks = tasks_of(ls, settings.label_studio_project_id)
    assert sorted(t["data"]["text_key"] for t in tasks) == sorted({text_key(f"query number {i}") for i in range(7)})
    assert {t["data"]["count"] for t in tasks} == {2}
    task_of_key = {t["data"]["text_key"]: t["id"] for t in tasks}
    rows = ledger(settings)
    assert set(rows) == set(ids) and {r.status for r in rows.values()} == {"pushed"}
    assert all(r.task_id == task_of_key[r.text_key] for r in rows.values())


@pytest.mark.labelstudio
def test_server_killed_mid_sync_resumes_without_duplicates_or_lost_answers(
    ls_settings: Settings, label_studio: LabelStudioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, needs_review(90))
    settings = with_project(ls_settings, monkeypatch)
    project_id = settings.label_studio_project_id
    impatient = LabelStudioClient(label_studio.url, TOKEN, retries=2, backoff=0.05)
    real_import = impatient.import_tasks
    imports = []

    def import_then_kill_midway(*args: Any) -> list[int]:
        imports.append(1)
        if len(imports) == 3:  # SIGKILL while the third batch is on its way or being written
            threading.Timer(0.02, label_studio.kill).start()
        return real_import(*args)

    impatient.import_tasks = import_then_kill_midway  # type: ignore[method-assign]
    try:
        with pytest.raises(LabelStudioError, match="push stopped after"):
            review_push.push(settings, batch_size=10, client=impatient)
    finally:
        label_studio.restart()
    with LabelStudioClient(label_studio.url, TOKEN) as ls:
        assert 20 <= sum(tasks_per_query(ls, project_id).values()) <= 30  # batches 1-2, maybe 3
        monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_URL", label_studio.url)  # the port may have moved
        settings = load_settings()
        review_push.push(settings, batch_size=10)
        per_query = tasks_per_query(ls, project_id)
        assert set(per_query) == set(ids) and set(per_query.values()) == {1}

        answered = {t["data"]["query_id"]: t["id"] for t in tasks_of(ls, project_id)[:30]}
        for i, task_id in enumerate(answered.values()):
            ls.create_annotation(task_id, choice("book_flight" if i % 2 else "cancel_order"))

    real_apply = review_pull._apply
    applied = []

    def apply_then_kill(*args: Any) -> None:
        real_apply(*args)
        applied.append(1)
        if len(applied) == 1:
            label_studio.kill()  # after the first batch is committed

    monkeypatch.setattr(review_pull, "_apply", apply_then_kill)
    impatient = LabelStudioClient(label_studio.url, TOKEN, retries=2, backoff=0.05)
    try:
        with pytest.raises(LabelStudioUnavailable):
            review_pull.pull(settings, batch_size=10, client=impatient)
    finally:
        label_studio.restart()
    monkeypatch.setattr(review_pull, "_apply", real_apply)
    stored = len(labels(settings))
    assert 10 <= stored < 30  # the first batch, maybe one more the prefetch had already read

    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_URL", label_studio.url)
    result = review_pull.pull(load_settings(), batch_size=10)
    assert result.written == 30 - stored and result.unchanged == stored
    gt = labels(settings)
    assert set(gt) == set(answered)
    assert [gt[q].label for q in answered] == ["cancel_order" if i % 2 == 0 else "book_flight" for i in range(30)]


@pytest.mark.labelstudio
def test_wrong_token_stops_at_once_naming_the_token(
    ls_settings: Settings, label_studio: LabelStudioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_retry(seconds: float) -> None:
        raise AssertionError("a refused token must not be retried")

    monkeypatch.setattr(labelstudio, "_backoff_sleep", no_retry)
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", "0" * 40)
    with pytest.raises(LabelStudioError, match="refused the legacy API token in INTELROUTER_LABEL_STUDIO_API_KEY"):
        review_push.push(load_settings(), project_id=1)
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
    with pytest.raises(LabelStudioError, match="refused the personal access token"):
        review_pull.pull(load_settings(), project_id=1)


@pytest.mark.labelstudio
def test_personal_access_token_is_exchanged_for_a_bearer_token(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    pat = ls.create_personal_access_token()
    assert labelstudio.is_personal_access_token(pat)
    seed(ls_settings, needs_review(2))
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", pat)
    settings = with_project(load_settings(), monkeypatch)
    assert review_push.push(settings).pushed == 2
    with LabelStudioClient(settings.label_studio_url, pat) as client:
        assert client.whoami()["email"] == USERNAME
        assert client._authorization().startswith("Bearer ")


@pytest.mark.labelstudio
def test_cli_setup_push_pull_sync(ls_settings: Settings, ls: LabelStudioClient) -> None:
    ids = seed(ls_settings, needs_review(3))
    env = dict(os.environ)

    def cli(*args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "cli", "review", *args], env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stdout

    out = cli("setup", "--title", f"cli-{uuid.uuid4().hex[:8]}")
    project_id = int(out.split()[1])
    assert f"set INTELROUTER_LABEL_STUDIO_PROJECT_ID={project_id}" in out
    env["INTELROUTER_LABEL_STUDIO_PROJECT_ID"] = str(project_id)
    assert cli("push", "--limit", "2").startswith(f"pushed 2 tasks to project {project_id}")
    assert "pushed 1 tasks" in cli("sync")
    task = {t["data"]["query_id"]: t["id"] for t in tasks_of(ls, project_id)}
    ls.create_annotation(task[ids[0]], choice("book_flight"))
    ls.create_annotation(task[ids[1]], [], was_cancelled=True)
    assert cli("pull").startswith(f"pulled 2 answers from project {project_id}: 1 approved, 0 none of these, 1 skipped")
    assert "pulled 0 answers" in cli("pull", "--project-id", str(project_id))


# --- one task per question, the most useful first ---------------------------------------------------------------


def copies(text: str, j: int) -> str:
    """The j-th way users type the same question: case, spacing and punctuation vary, the words do not."""
    return [text, text.upper(), f"  {text}  ", text.replace(" ", "   "), f"{text.capitalize()}?",
            f"{text}!!", text.title(), f"{text}.", f"\t{text}", f"{text.upper()} ???"][j % 10]


def answer_all(ls: LabelStudioClient, project_id: int, label_of: Any) -> dict[str, int]:
    """Answer every task of a project, `label_of(task)` giving the label (None: skip); task id by text key."""
    done = {}
    for task in tasks_of(ls, project_id):
        label = label_of(task)
        ls.create_annotation(task["id"], choice(label) if label else [], was_cancelled=label is None)
        done[task["data"]["text_key"]] = task["id"]
    return done


@pytest.mark.labelstudio
def test_300_queries_over_30_texts_make_30_tasks_and_30_answers_settle_all(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    bases = [f"where is my parcel number {i} now" for i in range(30)]
    rows = [{"text": copies(bases[i], j), "top_label": "track_order", "confidence": 0.3 + 0.01 * j,
             "user_id": f"user-{j % 4}", "language": ["en", "de", "fr"][j % 3]}
            for i in range(30) for j in range(10)]
    ids = seed(ls_settings, rows)
    settings = with_project(ls_settings, monkeypatch)
    result = review_push.push(settings)
    assert (result.selected, result.pushed, result.queued, result.joined) == (300, 30, 300, 0)
    tasks = tasks_of(ls, settings.label_studio_project_id)
    assert len(tasks) == 30
    assert {t["data"]["text_key"] for t in tasks} == {text_key(b) for b in bases}
    assert {(t["data"]["count"], t["data"]["users"], t["data"]["languages"]) for t in tasks} == {(10, 4, "de, en, fr")}
    rows_by_query = ledger(settings)
    assert set(rows_by_query) == set(ids) and len({r.task_id for r in rows_by_query.values()}) == 30

    def label_of(task: dict[str, Any]) -> str:  # every fifth question fits no label
        n = int(task["data"]["text"].lower().split("number")[1].split()[0])
        return review_project.NONE_CHOICE if n % 5 == 0 else ("track_order" if n % 2 else "lost_parcel")

    answer_all(ls, settings.label_studio_project_id, label_of)
    pulled = review_pull.pull(settings)
    assert (pulled.approved, pulled.rejected, pulled.skipped, pulled.queries) == (24, 6, 0, 300)
    assert pulled.disagreements == 12  # the "lost_parcel" answers: judged once per task, on the guess it showed
    st = statuses(settings)
    gt = labels(settings)
    for i, qid in enumerate(ids):
        n = i // 10
        assert st[qid] == (store.REJECTED if n % 5 == 0 else store.APPROVED)
        assert (gt[qid].label if qid in gt else None) == (None if n % 5 == 0 else label_of(
            {"data": {"text": bases[n]}}))
    assert {r.source for r in gt.values()} == {"label-studio"} and len(gt) == 240
    assert {r.status for r in ledger(settings).values()} == {"completed"}

    again = review_pull.pull(settings)
    assert (again.written, again.unchanged) == (0, 30)
    assert labels(settings) == gt
    assert review_push.push(settings).pushed == 0


@pytest.mark.labelstudio
def test_a_later_copy_joins_the_open_task_and_a_known_text_needs_no_task(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intelrouter.triage import triage

    def arrive(text: str) -> str:
        """A new query through capture and triage, as production traffic arrives."""
        qid = str(uuid.uuid4())
        capture.log_queries(ls_settings, [{"id": qid, "text": text, "predicted_label": "track_order",
                                           "confidence": 0.4, "model_version": "7"}])
        triage(ls_settings)
        return qid

    first = [arrive(t) for t in ("Where is my parcel?", "where is my parcel", "WHERE IS MY PARCEL")]
    settings = with_project(ls_settings, monkeypatch)
    project_id = settings.label_studio_project_id
    assert review_push.push(settings).pushed == 1
    late = arrive("where is   my parcel!")  # the task is still open: it joins it
    joined = review_push.push(settings)
    assert (joined.pushed, joined.joined) == (0, 1)
    (task,) = tasks_of(ls, project_id)
    assert ledger(settings)[late].task_id == task["id"]

    annotation = ls.create_annotation(task["id"], choice("track_order"))
    assert review_pull.pull(settings).queries == 4
    assert {statuses(settings)[q] for q in [*first, late]} == {store.APPROVED}

    known = arrive("Where is my parcel ?")  # answered already: settled at triage, no task
    row = labels(settings)[known]
    assert statuses(settings)[known] == store.APPROVED
    assert (row.label, row.source) == ("track_order", "label-studio")
    assert row.reviewer in {f"resolved from query {q}" for q in [*first, late]}
    assert review_push.push(settings).pushed == 0 and len(tasks_of(ls, project_id)) == 1

    ls.update_annotation(annotation["id"], choice("lost_parcel"))  # the reviewer corrects the answer
    review_pull.pull(settings)
    assert {labels(settings)[q].label for q in [*first, late, known]} == {"lost_parcel"}  # the copy follows

    other = seed(settings, [{"text": "sing me a song", "confidence": 0.2}])
    review_push.push(settings)
    other_task = next(t for t in tasks_of(ls, project_id) if t["data"]["query_id"] == other[0])
    ls.create_annotation(other_task["id"], choice(review_project.NONE_CHOICE))
    review_pull.pull(settings)
    rejected = arrive("Sing me a song!")  # "none of these" is known too
    assert statuses(settings)[rejected] == store.REJECTED and rejected not in labels(settings)

    monkeypatch.setenv("INTELROUTER_RESOLVE_KNOWN_TEXTS", "false")
    ls_settings, settings = load_settings(), load_settings()
    again = arrive("where is my parcel")
    assert statuses(settings)[again] == store.NEEDS_REVIEW
    assert review_push.push(settings).pushed == 1  # setting off: a new task for a known text


@pytest.mark.labelstudio
def test_push_orders_by_tier_then_value_and_label_studio_serves_that_order(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = {  # text: (priority, confidences of its copies) -> value = sum of (1 - confidence)
        "one odd question": (2, [0.1]),  # 0.9
        "asked three times": (2, [0.6, 0.6, 0.6]),  # 1.2: more useful than the one-off, though more confident
        "asked twice": (2, [0.65, 0.65]),  # 0.7
        "medium once": (5, [0.8]),  # 0.2
        "medium four times": (5, [0.84, 0.84, 0.84, 0.84]),  # 0.64
    }
    seed(ls_settings, [{"text": copies(text, j), "confidence": c, "priority": p}
                       for text, (p, confs) in plan.items() for j, c in enumerate(confs)])
    settings = with_project(ls_settings, monkeypatch)
    project_id = settings.label_studio_project_id
    assert ls.get_project(project_id)["sampling"] == review_project.SAMPLING
    review_push.push(settings)
    order = ["asked three times", "one odd question", "asked twice", "medium four times", "medium once"]
    tasks = tasks_of(ls, project_id)
    assert [t["data"]["text_key"] for t in tasks] == [text_key(t) for t in order]
    assert [t["data"]["value"] for t in tasks] == pytest.approx([1.2, 0.9, 0.7, 0.64, 0.2])
    served = ls.request("GET", f"/api/projects/{project_id}/next")  # the reviewer's "next task": the push order
    assert served["id"] == tasks[0]["id"]
    ls.create_annotation(served["id"], choice("book_flight"))

    # a second push, a day later: a question asked five times now goes before the old tasks still open, and a
    # medium one-off after every tier-2 task (Label Studio orders all open tasks by the prediction score)
    seed(ls_settings, [{"text": copies("asked five times today", j), "confidence": 0.5, "priority": 2}
                       for j in range(5)] + [{"text": "another medium one", "confidence": 0.75, "priority": 5}])
    assert review_push.push(settings).pushed == 2
    expected = ["asked five times today", "one odd question", "asked twice", "medium four times",
                "another medium one", "medium once"]
    view_id = review_project.ensure_view(ls, project_id)  # the Review queue tab lists the open ones in that order
    listed = ls.request("GET", "/api/tasks", params={"project": project_id, "view": view_id, "page_size": 100})
    assert [t["data"]["text_key"] for t in listed["tasks"] if not t["is_labeled"]] == [text_key(t) for t in expected]
    for text in expected:
        served = ls.request("GET", f"/api/projects/{project_id}/next")
        assert served["data"]["text_key"] == text_key(text), (text, served["data"]["text"])
        ls.create_annotation(served["id"], choice("book_flight"))


@pytest.mark.labelstudio
def test_review_groups_off_pushes_each_query_as_its_own_task_and_still_adopts(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, [{"text": copies("where is my parcel", j), "confidence": 0.2 + 0.1 * j} for j in range(4)])
    monkeypatch.setenv("INTELROUTER_REVIEW_GROUPS", "false")
    settings = with_project(ls_settings, monkeypatch)
    real = review_push._record_pushed

    def crash(*args: Any) -> None:
        raise RuntimeError("process killed after the import, before recording it")

    monkeypatch.setattr(review_push, "_record_pushed", crash)
    with pytest.raises(RuntimeError, match="process killed"):
        review_push.push(settings, batch_size=2)
    monkeypatch.setattr(review_push, "_record_pushed", real)
    result = review_push.push(settings, batch_size=2)
    assert (result.adopted, result.pushed) == (2, 2)  # the first batch adopted by query, the rest sent
    tasks = tasks_of(ls, settings.label_studio_project_id)
    assert [t["data"]["query_id"] for t in tasks] == ids  # one each, the least confident first: the seed's order
    assert {(t["data"]["count"], t["data"]["text_key"]) for t in tasks} == {(1, text_key("where is my parcel"))}
    assert {r.task_id for r in ledger(settings).values()} == {t["id"] for t in tasks}


@pytest.mark.labelstudio
def test_correction_to_none_of_these_or_skip_removes_the_review_label(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed(ls_settings, needs_review(4))
    settings = with_project(ls_settings, monkeypatch)
    review_push.push(settings)
    task = {t["data"]["query_id"]: t["id"] for t in tasks_of(ls, settings.label_studio_project_id)}
    answers = [ls.create_annotation(task[q], choice("book_flight")) for q in ids]
    assert review_pull.pull(settings).approved == 4
    with store.connect(settings) as conn:  # a user's override on query 3 outranks the review: it must stay
        groundtruth.upsert_label(conn, query_id=ids[3], text="query number 3", label="cancel_order",
                                 source="override", shares=settings.split_shares)
    assert set(labels(settings)) == set(ids)

    ls.update_annotation(answers[0]["id"], choice(review_project.NONE_CHOICE, comment="a new intent"))
    ls.request("PATCH", f"/api/annotations/{answers[1]['id']}", json_body={"result": [], "was_cancelled": True})
    ls.update_annotation(answers[3]["id"], choice(review_project.NONE_CHOICE))
    result = review_pull.pull(settings)
    assert (result.approved, result.rejected, result.skipped, result.unchanged) == (0, 2, 1, 1)
    gt = labels(settings)
    assert set(gt) == {ids[2], ids[3]}  # the review's labels on queries 0 and 1 are gone: never trained on
    assert gt[ids[3]].source == "override" and gt[ids[3]].label == "cancel_order"
    st = statuses(settings)
    assert [st[q] for q in ids] == [store.REJECTED, store.REJECTED, store.APPROVED, store.REJECTED]
    rows = ledger(settings)
    assert [rows[q].status for q in ids] == ["completed", "skipped", "completed", "completed"]
    assert rows[ids[0]].human_label is None and rows[ids[0]].comment == "a new intent"
    assert review_pull.pull(settings).written == 0 and set(labels(settings)) == {ids[2], ids[3]}
