"""Retraining on events: the rule, what it reads from the store and the registry, and the deployment trigger on a real
`prefect server` starting one training run per cool-down."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import wait_for
from training_support import seed_ml_data, synthetic_rows

from devservers.ports import free_port
from devservers.processes import running, stop
from flows.events import TRIGGER_NAME, retrain_trigger
from intelrouter import lifecycle, registry, retrain, store
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.groundtruth import record_feedback

T0 = datetime(2026, 3, 10, 12, 0)
REPO = Path(__file__).resolve().parents[1]


def rule(**changes: object) -> tuple[list[str], str | None]:
    """`retrain.due` on a quiet installation (production v1, no canary, no request yet), with some inputs changed."""
    settings = changes.pop("settings", load_settings(retrain_on_labels=100, retrain_cooldown_hours=24))
    inputs = {"drift": [], "new_labels": 0, "samples_waiting": 0, "production": "1", "canary": None,
              "last_request": None, "now": T0, **changes}
    return retrain.due(settings=settings, **inputs)  # type: ignore[arg-type]


def test_enough_new_human_labels_or_drift_with_new_data_ask_for_a_retrain() -> None:
    assert rule(new_labels=100) == (["100 new human labels since the last training (trigger 100)"], None)
    reasons, blocked = rule(drift=["label_drift", "unseen_words"], samples_waiting=40)
    assert reasons == ["drift alerted (label_drift, unseen_words) with 40 new samples to learn from"] and not blocked
    assert rule(new_labels=99, samples_waiting=99) == ([], "99 new human labels (trigger 100), no drift alerted")
    # drift with nothing new to learn from would retrain on the same rows
    reasons, blocked = rule(drift=["confidence_drift"])
    assert reasons == [] and "no new ground truth waits" in blocked
    off = load_settings(retrain_on_labels=0, retrain_on_drift=False)
    assert rule(settings=off, new_labels=10_000, drift=["label_drift"], samples_waiting=5)[0] == []


def test_nothing_is_asked_before_a_production_during_a_canary_or_within_the_cool_down() -> None:
    assert "no @production yet" in rule(new_labels=100, production=None)[1]
    assert rule(new_labels=100, canary="7")[1] == "v7 is on @staging: a newer candidate is being judged already"
    cooling = rule(new_labels=100, last_request=T0 - timedelta(hours=23))
    assert cooling[0] and cooling[1].startswith("cool-down: an event asked for a retrain at 2026-03-09T13:00:00")
    assert rule(new_labels=100, last_request=T0 - timedelta(hours=24)) == (
        ["100 new human labels since the last training (trigger 100)"], None)


def _labels(settings: Settings, n: int, tag: str, when: datetime | None = None) -> None:
    """`n` queries production v1 answered, each labelled by its user."""
    rows = synthetic_rows(n // 4 + 1, seed=sum(map(ord, tag)))[:n]
    log_queries(settings, [{"id": f"{tag}-{i}", "text": r["text"], "predicted_label": r["label"],
                            "top_label": r["label"], "confidence": 0.9, "model_version": "1",
                            "variant": "production", "created_at": when or store.utcnow()}
                           for i, r in enumerate(rows)])
    for i, r in enumerate(rows):
        record_feedback(settings, f"{tag}-{i}", r["label"])


def test_check_counts_labels_since_the_last_request_and_keeps_the_cool_down(settings: Settings) -> None:
    s = load_settings(retrain_on_labels=10, retrain_cooldown_hours=24)
    assert retrain.check(s).blocked.startswith("0 new human labels")  # no model registered at all
    client = registry.get_client(s)
    client.create_registered_model(s.model_name)
    version = client.create_model_version(s.model_name, source=str(settings.data_dir)).version
    lifecycle.promote(s, version, "production")
    _labels(s, 12, "first")
    found = retrain.check(s, ["uncertain_rate", "label_drift"])
    assert found.due and found.new_labels == 12 and found.samples_waiting == 12 and found.drift == ["label_drift"]
    assert found.summary.startswith("retrain requested: drift alerted (label_drift) with 12 new samples")
    now = store.utcnow()
    retrain.record_request(s, now)
    assert retrain.last_request(s) == now
    again = retrain.check(s)
    assert not again.due and again.new_labels == 0  # labels are counted from the last request
    _labels(s, 12, "second", when=now + timedelta(seconds=5))
    cooling = retrain.check(s, now=now + timedelta(hours=2))
    assert not cooling.due and cooling.new_labels == 12 and cooling.blocked.startswith("cool-down")
    assert retrain.check(s, now=now + timedelta(hours=25)).due


def test_prefect_yaml_carries_the_same_trigger_as_the_served_deployment() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (train,) = [d for d in config["deployments"] if d["name"] == "train"]
    (trigger,) = train["triggers"]
    assert DeploymentEventTrigger.model_validate(trigger) == retrain_trigger(load_settings())


# --- the deployment trigger on a real Prefect server -----------------------------------------------------------


class Prefect:
    """A real `prefect server`'s API, asked again when it answers 503 or, for a read, does not answer in time (a
    loaded machine keeps its SQLite locked)."""

    def __init__(self, api: str) -> None:
        self.api = api

    def post(self, path: str, body: Any = None, *, read: bool = True) -> Any:
        """POST to the API and return the JSON answer; `read`: a query, safe to send again after a timeout."""
        for attempt in range(10):
            try:
                resp = httpx.post(self.api + path, json=body or {}, timeout=30)
            except httpx.ReadTimeout:
                if not read or attempt == 9:
                    raise
                continue
            if resp.status_code != 503 or attempt == 9:
                resp.raise_for_status()
                return resp.json() if resp.content else None
            time.sleep(2)
        return None

    def deployments(self) -> dict[str, dict[str, Any]]:
        """Deployments by name."""
        return {d["name"]: d for d in self.post("/deployments/filter")}

    def runs(self, deployment_id: str) -> list[dict[str, Any]]:
        """Every flow run of a deployment."""
        return self.post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})

    def run_state(self, run_id: str) -> str:
        """The state type of one flow run."""
        return self.post("/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})[0]["state_type"]


@pytest.fixture
def prefect(tmp_path: Path) -> Iterator[Prefect]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME (healthy in 10-20 s)."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "server-home")}
    env.pop("PREFECT_API_URL", None)
    args = [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port",
            str(port)]
    with running("prefect-server", args, env, f"http://127.0.0.1:{port}/api/health", tmp_path / "server"):
        yield Prefect(f"http://127.0.0.1:{port}/api")


@contextmanager
def served(prefect: Prefect, tmp_path: Path) -> Iterator[Path]:
    """`python -m flows.deploy` against the server (every deployment, the retrain trigger) with this process's
    environment; yields its log."""
    log = tmp_path / "serve.log"
    env = {**os.environ, "PREFECT_API_URL": prefect.api, "PREFECT_HOME": str(tmp_path / "serve-home"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.deploy"], env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield log
        finally:
            stop(proc)


def _event_runs(server: Prefect, deployment_id: str) -> list[dict]:
    """Runs of the deployment started by the retrain trigger (they carry a reason; scheduled ones do not)."""
    return [r for r in server.runs(deployment_id) if "reason" in r["parameters"]]


def _run_to_completion(server: Prefect, deployment_id: str, log: Path) -> str:
    run = server.post(f"/deployments/{deployment_id}/create_flow_run", {"parameters": {}}, read=False)
    assert wait_for(lambda: server.run_state(run["id"]) in ("COMPLETED", "FAILED", "CRASHED"), timeout=300,
                    interval=1), log.read_text()[-3000:]
    assert server.run_state(run["id"]) == "COMPLETED", log.read_text()[-3000:]
    return run["id"]


def _retrain_check(server: Prefect, run_id: str) -> str:
    """The capture run's retrain-check artifact."""
    (artifact,) = server.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]},
                                                                  "key": {"any_": ["intelrouter-retrain-check"]}}})
    return artifact["data"]


@pytest.mark.embedded  # Prefect's triggers do not depend on our store: the SQLite pass runs this once
def test_a_retrain_event_starts_one_training_run_per_cool_down(settings: Settings, prefect: Prefect, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from intelrouter.jobs import train

    monkeypatch.setenv("INTELROUTER_RETRAIN_ON_LABELS", "10")  # the served flows read the same environment
    s = load_settings()
    seed_ml_data(s, synthetic_rows(30, seed=41))
    assert train(s).lifecycle == "production"
    _labels(s, 12, "feedback")  # 12 new human labels: enough to ask for a retrain

    with served(prefect, tmp_path) as log:
        assert wait_for(lambda: len(prefect.deployments()) == 6, timeout=180, interval=0.5), log.read_text()
        deployments = prefect.deployments()
        (automation,) = [a for a in prefect.post("/automations/filter") if a["name"] == TRIGGER_NAME]
        assert automation["trigger"]["within"] == 24 * 3600 and automation["trigger"]["expect"] == [retrain.EVENT]
        assert automation["actions"][0]["deployment_id"] == deployments["train"]["id"]

        # the daily capture sees the labels, emits the event; the trigger runs the training flow, forced
        first = _run_to_completion(prefect, deployments["capture"]["id"], log)
        assert "Retrain event **emitted**: retrain requested: 12 new human labels" in _retrain_check(prefect, first)
        train_id = deployments["train"]["id"]
        assert wait_for(lambda: [r for r in _event_runs(prefect, train_id) if r["state_type"] == "COMPLETED"],
                        timeout=300, interval=1), log.read_text()[-3000:]
        (run,) = _event_runs(prefect, train_id)
        assert run["parameters"]["force"] is True and "12 new human labels" in run["parameters"]["reason"]
        assert [str(mv.version) for mv in registry.list_model_versions(s)] == ["2", "1"]  # the run trained v2

        # within the cool-down: the capture flow asks nothing, even with the canary gone and new labels in
        lifecycle.clear_staging(s, "cleared by the test")
        _labels(s, 12, "more")
        second = _run_to_completion(prefect, deployments["capture"]["id"], log)
        assert "not emitted: no retrain requested: cool-down" in _retrain_check(prefect, second)

        # and the trigger itself fires once per cool-down: a second event (another installation's flow asking at
        # the same moment) starts no second run
        event_id = str(uuid.uuid4())
        prefect.post("/events", [{"id": event_id, "occurred": datetime.now(UTC).isoformat(), "event": retrain.EVENT,
                                  "resource": {"prefect.resource.id": retrain.resource_id(s)},
                                  "payload": {"reason": "a duplicate request"}}], read=False)
        assert wait_for(lambda: prefect.post("/events/filter", {"filter": {"id": {"id": [event_id]}}})["events"],
                        timeout=60, interval=1)
        time.sleep(15)  # the trigger service evaluates each event as it is received; give it ample time
        assert len(_event_runs(prefect, train_id)) == 1
