"""The Prefect flows, run for real under one session-scoped Prefect test server (a temporary SQLite API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import DATASETS, free_port
from sqlalchemy import select

from intelrouter import registry, review, store
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.errors import InputError, StoreError
from intelrouter.groundtruth import record_feedback
from intelrouter.labels import import_labels

SAMPLES = Path(__file__).resolve().parents[1] / "intelrouter" / "data" / "demo_queries.csv"


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Prefect test server for every flow test (about 15 s to start); yields its API URL."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_HOME: tmp_path_factory.mktemp("prefect-home")}):
        with prefect_test_harness(server_startup_timeout=120):
            yield SubprocessASGIServer().api_url


@pytest.fixture
def flow_settings(settings: Settings, prefect_server: str) -> Settings:
    """Settings on a fresh store, with the Prefect test server running."""
    return settings


def run(flow: Any, **params: Any) -> tuple[Any, str]:
    """Run a flow; returns its result and its flow run id (the run must complete)."""
    state = flow(**params, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), str(state.state_details.flow_run_id)


def artifacts(flow_run_id: str | None = None, key: str | None = None) -> dict[str, Any]:
    """Artifacts by key, of one flow run or the newest with a key."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    filt = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]) if flow_run_id else None,
        key=ArtifactFilterKey(any_=[key]) if key else None,
    )
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=filt, sort=ArtifactSort.CREATED_DESC)
    out: dict[str, Any] = {}
    for a in found:
        out.setdefault(a.key, a)
    return out


def _router_traffic(settings: Settings, n: int, version: str = "1", variant: str = "production",
                    correct: int = 0, tag: str = "q", hours_ago: float = 1.0) -> list[str]:
    when = store.utcnow() - timedelta(hours=hours_ago)
    ids = [f"{tag}-{i}" for i in range(n)]
    log_queries(settings, [{"id": qid, "text": f"{tag} text {i}", "predicted_label": "easy", "top_label": "easy",
                            "confidence": 0.5 + i / (4 * n), "uncertain": False, "model_version": version,
                            "variant": variant, "created_at": when} for i, qid in enumerate(ids)])
    for i, qid in enumerate(ids[:correct]):
        record_feedback(settings, qid, "easy" if i % 5 else "hard")
    return ids


# --- capture: triage, reports, artifacts, alerts, retries ------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_capture_flow_triages_reports_and_alerts(flow_settings: Settings) -> None:
    _router_traffic(flow_settings, 30, correct=30)  # 24 of 30 answers right: 80 %
    log_queries(flow_settings, [{"id": f"t{i}", "text": f"teacher {i}", "predicted_label": "weather",
                                 "confidence": 0.95, "provider": "teacher"} for i in range(5)])
    hook = HTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        from flows.capture import capture

        overrides = {"alert_waiting": 30, "online_accuracy_floor": 0.9,
                     "alert_webhook_url": f"http://127.0.0.1:{hook.server_port}/alerts"}
        result, run_id = run(capture, overrides=overrides)
    finally:
        hook.shutdown()
        hook.server_close()
    daily = result["daily"]
    assert (daily["triaged"], daily["auto_approved"], daily["needs_review"]) == (35, 5, 30)
    assert set(result["alerts"]) == {"online_accuracy", "samples_waiting"} and result["webhook"] is True
    assert {a["kind"] for a in _Hook.received[-1]["alerts"]} == {"online_accuracy", "samples_waiting"}
    monitoring = json.loads(Path(result["report"]).read_text())
    assert monitoring["production"]["online_accuracy"] == 0.8 and monitoring["samples_waiting"] == 35
    assert Path(result["daily"]["report_path"]).is_file()
    published = artifacts(run_id)
    assert {"intelrouter-monitoring", "intelrouter-daily-stats", "intelrouter-alerts"} <= set(published)
    assert "online_accuracy" in published["intelrouter-alerts"].data
    assert "| day | captured |" in published["intelrouter-monitoring"].data
    again, _ = run(capture)  # nothing new to triage; no alert at the default thresholds
    assert again["daily"]["triaged"] == 0 and again["alerts"] == []


def test_a_database_outage_is_retried_a_bad_input_is_not(flow_settings: Settings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.capture as capture_module

    _router_traffic(flow_settings, 3)
    real, calls = capture_module.triage, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # simulated: one call finds the database down (a real outage is tested in serving)
            raise StoreError("database is unreachable")
        return real(*args, **kwargs)

    monkeypatch.setattr(capture_module, "triage", flaky)
    monkeypatch.setattr(capture_module, "triage_queries",
                        capture_module.triage_queries.with_options(retry_delay_seconds=[0, 0, 0]))
    result, _ = run(capture_module.capture)
    assert len(calls) == 2 and result["daily"]["triaged"] == 3

    def refuses(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise InputError("bad since date")

    calls.clear()
    monkeypatch.setattr(capture_module, "triage", refuses)
    state = capture_module.capture(return_state=True)
    assert state.is_failed() and "bad since date" in state.message and len(calls) == 1


# --- training: the weekly rule, the 30-day run, the retrain loop ---------------------------------------------


def test_weekly_rule() -> None:
    from flows.train import should_train

    assert should_train(499, 500, False)[0] is False
    assert should_train(500, 500, False)[0] is True
    go, reason = should_train(3, 500, True)
    assert go and "regardless" in reason


def test_train_flow_skips_then_trains_then_puts_the_next_version_on_canary(flow_settings: Settings) -> None:
    from flows.train import train

    s = flow_settings
    too_few, _ = run(train, force=True)  # the 30-day run on an empty store: a logged skip, not a failure
    assert too_few["trained"] is False and "Insufficient training data: 0 samples" in too_few["reason"]
    import_labels(s, SAMPLES, "text", "label", None)
    skipped, _ = run(train)
    assert skipped["trained"] is False and "weekly trigger is 500" in skipped["reason"]
    assert registry.alias_version(s, "production") is None

    first, _ = run(train, force=True)  # the 30-day schedule's run
    assert first["trained"] and first["lifecycle"] == "production" and first["gate_passed"]
    assert first["aliases"]["production"] == first["version"]
    snapshot = Path(first["snapshot"])
    assert first["snapshot_rows"] == 322 and len(snapshot.read_text().splitlines()) == 322
    assert Path(first["report"]).name == "training-router-v1.0.0.json"
    with store.connect(s) as conn:
        trained = conn.execute(select(store.ml_data.c.trained_version)).scalars().all()
    # every row the version used (held-out ones too) is marked: nothing stays "unused" to re-trigger training
    assert trained.count("1.0.0") == first["trained_rows"] == 322 and trained.count(None) == 0
    quiet, _ = run(train, overrides={"weekly_trigger": 1})
    assert quiet["trained"] is False and quiet["waiting"] == 0

    second, _ = run(train, force=True)
    assert second["trained"] and second["semver"] == "1.1.0"
    assert second["lifecycle"] == "canary" and second["aliases"] == {
        "production": first["version"], "staging": second["version"], "canary_share": 0.1}
    retrain = artifacts(key="intelrouter-retrain")["intelrouter-retrain"]
    assert "v1.1.0" in retrain.data and "canary" in retrain.data


def test_export_flow_writes_a_snapshot(flow_settings: Settings, tmp_path: Path) -> None:
    from flows.export import export

    import_labels(flow_settings, DATASETS / "banking77" / "test.csv", "text", "category", None)
    out = tmp_path / "snap.jsonl"
    result, run_id = run(export, output=str(out), limit=100)
    assert result == {"path": str(out), "rows": 100}
    assert len(out.read_text().splitlines()) == 100
    assert "100" in artifacts(run_id)["intelrouter-export"].data


# --- canary -------------------------------------------------------------------------------------------------


def test_canary_check_flow_raises_the_share_and_logs_it(flow_settings: Settings) -> None:
    from flows.canary_check import canary_check

    s = flow_settings
    client = registry.get_client(s)
    client.create_registered_model(s.model_name)
    (s.data_dir / "model").mkdir(parents=True, exist_ok=True)
    v1, v2 = (str(client.create_model_version(s.model_name, source=str(s.data_dir / "model")).version)
              for _ in range(2))
    registry.promote(s, v1, "production")
    registry.promote(s, v2, "staging")
    _router_traffic(s, 10, version=v2, variant="staging", correct=10, tag="s", hours_ago=2)
    _router_traffic(s, 10, version=v1, variant="production", correct=10, tag="p", hours_ago=1)

    waiting, _ = run(canary_check)  # 48 h window by default
    assert waiting["decision"]["action"] == "wait" and registry.canary_share(s) == 0.1
    result, run_id = run(canary_check, overrides={"canary_window_hours": 1, "canary_min_feedback": 10})
    assert result["decision"]["action"] == "raise" and result["applied"]
    assert registry.canary_share(s) == 0.5
    assert json.loads(Path(result["path"]).read_text())["decision"]["share"] == 0.5
    assert "intelrouter rollback" in artifacts(run_id)["intelrouter-canary"].data


# --- the CLI against the same server ------------------------------------------------------------------------


def test_cli_flow_run(flow_settings: Settings, prefect_server: str) -> None:
    _router_traffic(flow_settings, 4)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    out = subprocess.run([sys.executable, "-m", "intelrouter.cli", "flow", "run", "capture"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout[out.stdout.index("{"):])["daily"]["triaged"] == 4
    bad = subprocess.run([sys.executable, "-m", "intelrouter.cli", "flow", "run", "nightly"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("error: unknown flow 'nightly': use one of capture, labelstudio-sync, export, "
                                  "train, canary-check, retrain-loop")


# --- Label Studio sync against a real Label Studio --------------------------------------------------------------


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
    assert [(r.name.rsplit("-", 1)[0], r.run_count) for r in runs] == [("push_tasks", 1)]  # no retry of a refusal


@pytest.mark.labelstudio
def test_labelstudio_sync_flow_pushes_then_pulls_once(flow_settings: Settings, label_studio: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from labelstudio_support import TOKEN

    from flows.labelstudio_sync import labelstudio_sync
    from intelrouter.labelstudio import LabelStudioClient
    from intelrouter.triage import triage

    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("INTELROUTER_LABEL_STUDIO_API_KEY", TOKEN)
    s = load_settings()
    ids = _router_traffic(s, 3)
    triage(s)  # the router's own answers need review
    project_id = review.setup_project(s, title=f"flows-{uuid.uuid4().hex[:8]}")
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
