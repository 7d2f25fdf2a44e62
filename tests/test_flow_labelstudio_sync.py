"""The Label Studio sync flow (every 6 h) against a real Label Studio: skip, refusal, pull then push."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flow_fixtures import artifacts, router_traffic, run
from sqlalchemy import select

from intelrouter import store
from intelrouter.config import Settings, load_settings
from intelrouter.review_project import setup_project


def test_labelstudio_sync_flow_without_label_studio_skips(flow_settings: Settings) -> None:
    from flows.labelstudio_sync import labelstudio_sync

    result, _ = run(labelstudio_sync)
    assert result == {"skipped": "skipped: Label Studio is not configured (set INTELROUTER_LABEL_STUDIO_URL)"}


@pytest.mark.labelstudio
def test_labelstudio_sync_flow_with_a_wrong_token_fails_at_once(flow_settings: Settings, label_studio: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.labelstudio_sync import labelstudio_sync

    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", "not-a-token")
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_PROJECT_ID", "1")
    state = labelstudio_sync(return_state=True)
    assert state.is_failed() and "token" in state.message.lower()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[state.state_details.flow_run_id])))
    assert [(r.name.rsplit("-", 1)[0], r.run_count) for r in runs] == [("sync_review", 1)]  # no retry of a refusal


@pytest.mark.labelstudio
def test_labelstudio_sync_flow_pulls_then_pushes_once(flow_settings: Settings, label_studio: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from devservers.labelstudio import TOKEN
    from flows.labelstudio_sync import labelstudio_sync
    from intelrouter.labelstudio import LabelStudioClient
    from intelrouter.triage import triage

    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", TOKEN)
    s = load_settings()
    ids = router_traffic(s, 3)
    triage(s)  # the router's own answers need review
    project_id = setup_project(s, title=f"flows-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_PROJECT_ID", str(project_id))

    first, run_id = run(labelstudio_sync)
    assert first["push"]["pushed"] == 3 and first["pull"]["written"] == 0
    assert "pushed **3** tasks" in artifacts(run_id)["intelrouter-labelstudio-sync"].data
    with LabelStudioClient(label_studio.url, TOKEN) as ls:
        tasks = {t["data"]["query_id"]: t["id"] for page in ls.iter_tasks(project_id) for t in page}
        ls.create_annotation(tasks[ids[0]], [{"from_name": "label", "to_name": "text", "type": "choices",
                                              "value": {"choices": ["easy"]}}])
    second, _ = run(labelstudio_sync)
    assert second["push"]["pushed"] == 0 and second["pull"]["approved"] == 1
    with store.connect(s) as conn:
        rows = conn.execute(select(store.ml_data.c.query_id, store.ml_data.c.label, store.ml_data.c.source)).all()
    assert rows == [(ids[0], "easy", "label-studio")]
    third, _ = run(labelstudio_sync)
    assert third["push"]["pushed"] == 0 and third["pull"]["written"] == 0
