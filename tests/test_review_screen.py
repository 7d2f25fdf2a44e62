"""The reviewer's screen: the model's suggestions on each task, and the Data Manager view `review setup` keeps."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from test_review import ls, ls_settings, seed, tasks_of, with_project  # noqa: F401 - ls, ls_settings are fixtures
from training_support import seed_ml_data, shared_tracking_uri, synthetic_rows  # noqa: F401 - a fixture

from devservers.ports import free_port
from intelrouter import jobs, loading, review_project, review_push, review_screen, store
from intelrouter.config import Settings, load_settings
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.names import UNCERTAIN
from intelrouter.review_screen import merge, quick_picks, summary_line, view_data

# --- no server needed -------------------------------------------------------------------------------


def test_the_stored_guess_comes_first_then_the_models_next_best() -> None:
    ranked = [("book_flight", 0.5), ("weather", 0.3), (UNCERTAIN, 0.1), ("play_music", 0.08), ("set_alarm", 0.02)]
    assert merge("weather", 0.45, ranked) == [("weather", 0.45), ("book_flight", 0.5), ("play_music", 0.08)]
    assert merge(None, 0.2, ranked) == [("book_flight", 0.5), ("weather", 0.3), ("play_music", 0.08)]
    assert merge("weather", 0.45, []) == [("weather", 0.45)]  # no model: the stored guess alone


def test_the_line_and_the_quick_picks_say_what_the_model_thinks() -> None:
    top = [("oos", 0.45), ("travel_suggestion", 0.123), ("book_flight", 0.004)]
    assert summary_line(top) == "Model: oos 45 % · travel_suggestion 12 % · book_flight <1 %"
    assert summary_line(top[:1], count=3) == "Model: oos 45 % — 3 queries share this text"
    assert summary_line([]) == "Model: no guess"
    picks = quick_picks([("a<b", 0.5), *top])
    assert [(p["value"], p["hotkey"]) for p in picks] == [("a<b", "1"), ("oos", "2"), ("travel_suggestion", "3")]
    assert picks[0]["html"] == "a&lt;b <small>50 %</small>"  # shown escaped, written as the label itself


def test_the_view_hides_all_but_its_columns_and_keeps_what_a_reviewer_set() -> None:
    columns = ["id", "inner_id", "total_annotations", "data.text", "data.priority", "data", "created_at"]
    data = view_data(columns)
    assert data["title"] == "Review queue" and data["ordering"] == ["tasks:predictions_score"]
    explore = set(data["hiddenColumns"]["explore"])
    assert {"tasks:inner_id", "tasks:created_at", "tasks:data", "tasks:data.query_id", "tasks:data.suggestions",
            "tasks:data.suggestion_line"} <= explore
    assert not explore & {"tasks:id", "tasks:data.text", "tasks:data.priority", "tasks:data.guess",
                          "tasks:data.confidence", "tasks:data.count", "tasks:data.language"}
    assert "tasks:data.text" in data["hiddenColumns"]["labeling"]  # the list beside the task: id, guess, confidence
    assert data["columnsDisplayType"]["tasks:data.count"] == "Number"  # sorted as numbers
    mine = {**data, "columnsWidth": {"tasks:data.guess": 300}, "filters": {"conjunction": "and", "items": [1]}}
    again = view_data(columns, mine)
    assert again["columnsWidth"]["tasks:data.guess"] == 300 and again["filters"] == mine["filters"]


# --- against the real servers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(shared_tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # noqa: F811
    """A version registered by the real training job on the session's MLflow store, under a model name of its own."""
    root: Path = tmp_path_factory.mktemp("trained")
    name = f"m{uuid.uuid4().hex[:10]}"
    with pytest.MonkeyPatch.context() as mp:  # module scope: the per-test clean environment is not there yet
        for key in [k for k in os.environ if k.startswith("INTELROUTER_")]:
            mp.delenv(key)
        settings = load_settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'train.db'}",
                                 mlflow_tracking_uri=shared_tracking_uri, model_name=name, mlflow_experiment=name)
    seed_ml_data(settings, synthetic_rows(per_label=30, oos=20))
    version = jobs.train(settings).version
    yield {"name": name, "version": str(version), "router": loading.load_version(settings, version)}


@pytest.mark.labelstudio
def test_push_shows_the_top_three_of_the_version_that_answered(
    ls_settings: Settings, ls: LabelStudioClient, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("INTELROUTER_MODEL_NAME", trained["name"])
    monkeypatch.setenv("INTELROUTER_REVIEW_GROUPS", "false")  # five answers to one text: a task each, to compare
    v, router = trained["version"], trained["router"]
    text = "will it rain in paris tomorrow"
    (proba,) = router.predict_proba([text])
    ranked = sorted(zip(router.labels, proba, strict=True), key=lambda lp: -lp[1])
    ids = seed(load_settings(), [
        {"text": text, "top_label": ranked[0][0], "confidence": 0.41, "model_version": v},  # the model's own guess
        {"text": text, "top_label": "set_alarm", "confidence": 0.42, "model_version": v},  # a guess it ranks lower
        {"text": text, "top_label": "weather", "confidence": 0.43, "model_version": "99"},  # not in the registry
        {"text": text, "top_label": "weather", "confidence": 0.44, "model_version": v},  # captured from a teacher
        {"text": text, "predicted_label": UNCERTAIN, "top_label": None, "confidence": 0.45, "model_version": v},
    ])
    with store.connect(load_settings()) as conn:
        conn.execute(update(store.queries).where(store.queries.c.id == ids[3]).values(provider="teacher"))
    loads: Counter[str] = Counter()
    real_load = loading.load_version

    def counted(settings: Settings, version: str) -> Any:
        loads[str(version)] += 1
        return real_load(settings, version)

    monkeypatch.setattr(loading, "load_version", counted)
    settings = with_project(load_settings(), monkeypatch)
    assert review_push.push(settings, batch_size=2).pushed == 5
    assert loads == {v: 1, "99": 1}  # each version loaded once per push, across its three batches

    data = {t["data"]["query_id"]: t["data"] for t in tasks_of(ls, settings.label_studio_project_id)}
    top = lambda i: [(s["value"], s["hotkey"]) for s in data[ids[i]]["suggestions"]]  # noqa: E731
    assert top(0) == [(ranked[0][0], "1"), (ranked[1][0], "2"), (ranked[2][0], "3")]
    assert data[ids[0]]["suggestion_line"] == summary_line([(ranked[0][0], 0.41), ranked[1], ranked[2]])
    assert top(1) == [("set_alarm", "1"), (ranked[0][0], "2"), (ranked[1][0], "3")]
    assert top(2) == [("weather", "1")] and data[ids[2]]["suggestion_line"] == "Model: weather 43 %"
    assert top(3) == [("weather", "1")]  # another provider's answer: the stored guess only
    assert [label for label, _ in top(4)] == [label for label, _ in ranked[:3]] and data[ids[4]]["guess"] == ""
    predictions = {t["data"]["query_id"]: t["predictions"] for t in tasks_of(ls, settings.label_studio_project_id)}
    assert [p["result"] for p in predictions[ids[4]]] == [[]]  # no guess: nothing pre-selected (the order's score only)
    assert predictions[ids[1]][0]["result"][0]["value"] == {"choices": ["set_alarm"]}


@pytest.mark.labelstudio
def test_setup_keeps_one_review_queue_first_with_our_columns(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    seed(ls_settings, [{"top_label": "book_flight", "confidence": 0.4}])
    settings = with_project(ls_settings, monkeypatch)
    pid = settings.label_studio_project_id
    (view,) = ls.views(pid)
    assert view["data"]["title"] == review_screen.VIEW_TITLE and view["data"]["ordering"] == ["tasks:predictions_score"]
    assert "tasks:inner_id" in view["data"]["hiddenColumns"]["explore"]
    assert ls.get_project(pid)["sampling"] == review_project.SAMPLING

    # a reviewer opened the Data Manager before (its own "Default" tab) and widened a column of ours
    default = ls.create_view(pid, {"title": "Default", "type": "list", "target": "tasks"})
    ls.order_views(pid, [default["id"], view["id"]])
    ls.update_view(view["id"], pid, {**view["data"], "columnsWidth": {"tasks:data.guess": 333}})
    review_push.push(settings)  # tasks bring new columns (guess, suggestions, ...)
    assert review_project.setup_project(settings) == pid
    views = ls.views(pid)
    assert [v["data"]["title"] for v in views] == [review_screen.VIEW_TITLE, "Default"]  # ours first, not twice
    ours = views[0]["data"]
    assert ours["columnsWidth"]["tasks:data.guess"] == 333
    shown = {c for c in ls.columns(pid) if f"tasks:{c}" not in ours["hiddenColumns"]["explore"]}
    assert shown == {"id", "data.priority", "data.guess", "data.confidence", "data.count", "data.language",
                     "data.text", "total_annotations", "cancelled_annotations", "annotators"}


@pytest.mark.labelstudio
def test_an_unreachable_registry_costs_one_try_and_the_push_goes_on(
    ls_settings: Settings, ls: LabelStudioClient, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    ids = seed(ls_settings, [{"top_label": "weather", "confidence": 0.3, "model_version": "1"},
                             {"top_label": "book_flight", "confidence": 0.4, "model_version": "2"}])
    settings = with_project(ls_settings, monkeypatch)
    monkeypatch.setenv("INTELROUTER_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens
    tried: list[str] = []
    real_load = loading.load_version
    monkeypatch.setattr(loading, "load_version", lambda s, v: tried.append(str(v)) or real_load(s, v))
    assert review_push.push(load_settings()).pushed == 2
    assert tried == ["1"]  # version 2 was not tried: the registry did not answer for version 1
    data = {t["data"]["query_id"]: t["data"] for t in tasks_of(ls, settings.label_studio_project_id)}
    assert data[ids[0]]["suggestion_line"] == "Model: weather 30 %"
    assert [s["value"] for s in data[ids[1]]["suggestions"]] == ["book_flight"]
