"""The reviewer's screen in a real browser: Debian's headless Chromium (playwright) against the real Label Studio.

A CLINC150 project (151 labels) gets queries answered by a registered model; the test logs in as the reviewer,
opens pushed tasks at 1366x768, checks the model's line and its three quick picks are on screen without scrolling
with the guess pre-selected, answers through each path (Ctrl+Enter on the guess, hotkey 2, the full list, None of
these) and checks that the pull stores exactly those answers. REVIEW_SCREENSHOT=docs/review-task.png also saves
the screenshot of the first task there.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DATASETS, wait_for
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select, update
from test_dashboard_browser import VIEWPORT, browser, png_size  # noqa: F401 - browser is a fixture

from devservers.labelstudio import PASSWORD, TOKEN, USERNAME, LabelStudioServer
from intelrouter import capture, jobs, review_project, review_pull, review_push, store
from intelrouter.config import load_settings
from intelrouter.groundtruth import insert_labels
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.loading import load_version

pytestmark = [pytest.mark.labelstudio, pytest.mark.embedded]  # the store is SQLite of its own: run once
WAIT_MS = 60_000  # for the page to react: generous, the machine may be busy
PER_LABEL = 10  # CLINC150 training rows per label: enough for a model whose top 3 make sense, fast to fit


@pytest.fixture(scope="module")
def review(label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A store with CLINC150 ground truth, a registered model, four queries it answered, pushed to a new project."""
    root = tmp_path_factory.mktemp("review")
    overrides = {"data_dir": root / "data", "database_url": f"sqlite:///{root / 'intelrouter.db'}",
                 "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "label_studio_url": label_studio.url,
                 "label_studio_api_key": TOKEN}
    with pytest.MonkeyPatch.context() as mp:  # module scope: the per-test clean environment is not there yet
        for key in [k for k in os.environ if k.startswith("INTELROUTER_")]:
            mp.delenv(key)
        settings = load_settings(**overrides)
    data = json.loads((DATASETS / "clinc150" / "data_full.json").read_text())
    per_label: dict[str, int] = {}
    rows = []
    for text, label in data["train"] + data["oos_train"]:
        if per_label.get(label, 0) < PER_LABEL:
            per_label[label] = per_label.get(label, 0) + 1
            rows.append({"text": text, "label": label})
    with store.connect(settings) as conn:
        insert_labels(conn, rows, "import", shares=settings.split_shares)
    version = jobs.train(settings).version
    router = load_version(settings, version)

    texts = [text for text, _ in random.Random(3).sample(data["test"], 4)]
    records = [
        {"id": str(uuid.uuid4()), "text": text, "language": "en", "predicted_label": p.label, "top_label": p.top_label,
         "confidence": p.confidence, "uncertain": p.uncertain, "model_version": str(version)}
        for text, p in zip(texts, router.predict(texts), strict=True)
    ]
    capture.log_queries(settings, records)
    with store.connect(settings) as conn:
        conn.execute(update(store.queries).values(review_status=store.NEEDS_REVIEW, review_priority=2))
    project_id = review_project.setup_project(settings, title=f"browser-{uuid.uuid4().hex[:8]}")
    settings = settings.model_copy(update={"label_studio_project_id": project_id})
    assert review_push.push(settings).pushed == 4
    with LabelStudioClient(label_studio.url, TOKEN) as ls:
        tasks = [t for page in ls.iter_tasks(project_id) for t in page]  # push order: least confident first
        yield {"settings": settings, "project_id": project_id, "url": label_studio.url, "ls": ls, "tasks": tasks,
               "labels": len(per_label)}
    store.dispose_engines()


@pytest.fixture
def page(browser: Browser, review: dict[str, Any]) -> Iterator[Page]:  # noqa: F811 - browser is imported
    """A 1366x768 page logged in as the reviewer."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{review['url']}/user/login/")
    page.fill("input[name=email]", USERNAME)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url)
    yield page
    context.close()


def open_task(page: Page, review: dict[str, Any], task: dict[str, Any]) -> None:
    """Open a task the way a reviewer does from the task list; wait until its quick picks are drawn (their
    hotkeys are bound in the same step) with the guess pre-selected."""
    page.goto(f"{review['url']}/projects/{review['project_id']}/data?task={task['id']}")
    page.wait_for_load_state("networkidle")  # the Data Manager opens its default tab, then the task
    quick = page.locator(".lsf-choices").first.locator("input[type=radio]")
    expect(quick).to_have_count(len(task["data"]["suggestions"]), timeout=WAIT_MS)
    expect(quick.first).to_be_checked(timeout=WAIT_MS)


def quick_picks(page: Page) -> list[dict[str, Any]]:
    """The quick picks on screen: label, checked, box."""
    picks = page.locator(".lsf-choices").first.locator(".lsf-choice")
    return [{"text": p.inner_text().split("\n")[0], "checked": p.locator("input").is_checked(),
             "box": p.bounding_box()} for p in picks.all()]


def answered(review: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """Wait for the task's submitted annotation and return its result."""
    got: dict[str, Any] = {}

    def has_annotation() -> bool:
        anns = review["ls"].request("GET", f"/api/tasks/{task['id']}").get("annotations") or []
        got.update(anns[-1] if anns else {})
        return bool(anns)

    assert wait_for(has_annotation, timeout=30, interval=0.3), f"no annotation on task {task['id']}"
    return got


def on_screen(box: dict[str, float] | None) -> bool:
    """The box is inside the 1366x768 viewport, no scrolling needed."""
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"] \
        and box["x"] + box["width"] <= VIEWPORT["width"]


def test_reviewer_confirms_or_corrects_the_guess_without_scrolling(
    review: dict[str, Any], page: Page, tmp_path: Path
) -> None:
    assert review["labels"] >= 150
    first, second, third, fourth = review["tasks"]

    open_task(page, review, first)
    data = first["data"]
    suggestions = [s["value"] for s in data["suggestions"]]
    assert len(suggestions) == 3 and suggestions[0] == data["guess"]
    line = page.get_by_text(data["suggestion_line"], exact=True)
    assert data["suggestion_line"].startswith(f"Model: {data['guess']} ") and on_screen(line.bounding_box())
    picks = quick_picks(page)
    assert [p["text"].split()[0] for p in picks] == suggestions
    assert [p["checked"] for p in picks] == [True, False, False]  # the guess is pre-selected
    assert all(on_screen(p["box"]) for p in picks)
    assert page.locator("input[type=radio]").count() >= 3 + review["labels"]  # the full list is there too
    header = page.locator(".lsf-table-head").first.inner_text().lower()
    assert "guess" in header and "confidence" in header  # the task list beside the task shows the view's columns
    shot = tmp_path / "review-task.png"
    page.screenshot(path=str(shot))
    assert png_size(shot) == (VIEWPORT["width"], VIEWPORT["height"])
    if os.environ.get("REVIEW_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["REVIEW_SCREENSHOT"])
    page.keyboard.press("Control+Enter")  # one action confirms the guess
    assert answered(review, first)["result"][0]["value"]["choices"] == [data["guess"]]

    open_task(page, review, second)
    page.keyboard.press("2")  # the model's second suggestion
    expect(page.locator(".lsf-choices").first.locator("input[type=radio]").nth(1)).to_be_checked(timeout=WAIT_MS)
    assert [p["checked"] for p in quick_picks(page)] == [False, True, False]
    page.get_by_role("button", name="Submit").click()
    alternative = second["data"]["suggestions"][1]["value"]
    assert answered(review, second)["result"][0]["value"]["choices"] == [alternative]

    open_task(page, review, third)
    chosen = next(s for s in ("weather", "translate", "timer") if s not in third["data"]["guess"])
    page.keyboard.press("Shift+F")  # to the filter box
    page.keyboard.type(chosen)
    page.keyboard.press("Enter")  # picks the first label the filter leaves
    # a pick in the full list hides the quick picks: it is the answer
    expect(page.locator(".lsf-choices").first).to_be_hidden(timeout=WAIT_MS)
    page.get_by_role("button", name="Submit").click()
    answered(review, third)

    open_task(page, review, fourth)
    page.keyboard.press("0")  # None of these / new label
    expect(page.locator(".lsf-choices").first).to_be_hidden(timeout=WAIT_MS)
    page.get_by_role("button", name="Submit").click()
    answered(review, fourth)

    result = review_pull.pull(review["settings"])
    assert (result.approved, result.rejected, result.skipped, result.disagreements) == (3, 1, 0, 2)
    with store.connect(review["settings"]) as conn:
        gt = dict(conn.execute(select(store.ml_data.c.query_id, store.ml_data.c.label)
                               .where(store.ml_data.c.query_id.is_not(None))).all())
        status = dict(conn.execute(select(store.queries.c.id, store.queries.c.review_status)).all())
    ids = [t["data"]["query_id"] for t in review["tasks"]]
    assert gt == {ids[0]: first["data"]["guess"], ids[1]: alternative, ids[2]: chosen}
    assert [status[i] for i in ids] == [store.APPROVED] * 3 + [store.REJECTED]
