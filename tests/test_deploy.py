"""Schedules against a real `prefect server`: served deployments, their scheduled runs, a restart, prefect.yaml."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import wait_for

from devservers.ports import free_port
from flows.deploy import specs
from intelrouter.config import Settings, load_settings, telemetry_off

REPO = Path(__file__).resolve().parents[1]
PREFECT = Path(sys.executable).with_name("prefect")
SCHEDULED = {"capture", "labelstudio-sync", "train", "canary-check"}


class PrefectServer:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.env = telemetry_off({**os.environ, "PREFECT_HOME": str(root / "home")})
        self.env.pop("PREFECT_API_URL", None)
        self.log = (root / "server.log").open("wb")
        self.proc = subprocess.Popen([str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port",
                                      str(self.port)], env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def api(self) -> str:
        """The API URL (what PREFECT_API_URL is set to)."""
        return f"http://127.0.0.1:{self.port}/api"

    def healthy(self) -> bool:
        """True once the API answers."""
        try:
            return httpx.get(self.api + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST to the API and return the JSON answer."""
        resp = httpx.post(self.api + path, json=body or {}, timeout=30)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def deployments(self) -> dict[str, dict[str, Any]]:
        """Deployments by name."""
        return {d["name"]: d for d in self.post("/deployments/filter")}

    def runs(self, deployment_id: str, states: list[str]) -> list[dict[str, Any]]:
        """Flow runs of a deployment in the given state types, by expected start time."""
        return self.post("/flow_runs/filter", {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": states}}}, "sort": "EXPECTED_START_TIME_ASC"})

    def run_state(self, run_id: str) -> str:
        """The state type of one flow run."""
        resp = httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30)
        resp.raise_for_status()
        return resp.json()["state"]["type"]

    def stop(self) -> None:
        """SIGTERM the server's process group and wait."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[PrefectServer]:
    """A real Prefect server for this module (healthy in 10-20 s)."""
    root = Path(tempfile.mkdtemp(prefix="intelrouter-prefect-"))
    server = PrefectServer(root)
    try:
        if not wait_for(server.healthy, timeout=180, interval=0.5):
            pytest.fail("prefect server did not start: " + (root / "server.log").read_text()[-2000:])
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def start_serving(server: PrefectServer, tmp_path: Path) -> subprocess.Popen:
    """`python -m flows.deploy` against the server (the runner polls every 2 s)."""
    env = {**os.environ, "PREFECT_API_URL": server.api, "PREFECT_HOME": str(tmp_path / "serve-home"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    return subprocess.Popen([sys.executable, "-m", "flows.deploy"], env=env, cwd=tmp_path,
                            stdout=(tmp_path / "serve.log").open("ab"), stderr=subprocess.STDOUT)


def stop_serving(proc: subprocess.Popen) -> None:
    """SIGTERM the serve process, as a service manager would on restart."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def expected_schedules(settings: Settings) -> dict[str, list[tuple]]:
    """(slug, cron or interval seconds, timezone, parameters) per deployment, from flows/deploy.py's table."""
    return {
        s.name: sorted((x.slug, x.cron or x.every.total_seconds(), "UTC", x.parameters) for x in s.schedules)
        for s in specs(settings)
    }


def actual_schedules(deployment: dict[str, Any]) -> list[tuple]:
    """The same tuples as the server holds them."""
    return sorted((s["slug"], s["schedule"].get("cron") or s["schedule"].get("interval"), s["schedule"]["timezone"],
                   s["parameters"]) for s in deployment["schedules"])


# Prefect's scheduling does not depend on our store: these run in the SQLite pass only (the flows themselves
# run on PostgreSQL in test_flows.py).
@pytest.mark.embedded
def test_served_schedules_create_runs_and_survive_a_restart(settings: Settings, prefect_server: PrefectServer,
                                                            tmp_path: Path) -> None:
    server = prefect_server
    proc = start_serving(server, tmp_path)
    try:
        assert wait_for(lambda: len(server.deployments()) == 6, timeout=120, interval=0.5), \
            (tmp_path / "serve.log").read_text()
        deployments = server.deployments()
        want = expected_schedules(settings)
        for name, dep in deployments.items():
            assert actual_schedules(dep) == want[name], name
            assert dep["entrypoint"].startswith("flows.")  # module path: served from any working directory
        # the server's scheduler turns the schedules into runs
        assert wait_for(lambda: all(server.runs(deployments[n]["id"], ["SCHEDULED"]) for n in SCHEDULED),
                        timeout=120, interval=1)
        capture_runs = server.runs(deployments["capture"]["id"], ["SCHEDULED"])
        starts = [datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) for r in capture_runs]
        assert all((t.hour, t.minute) == (2, 0) for t in starts)
        hourly = server.runs(deployments["canary-check"]["id"], ["SCHEDULED"])
        assert all(r["expected_start_time"][14:19] == "00:00" for r in hourly)
        train_params = {tuple(sorted(r["parameters"].items())) for r in
                        server.runs(deployments["train"]["id"], ["SCHEDULED"])}
        assert train_params == {(("force", False),), (("force", True),)}
    finally:
        stop_serving(proc)

    # stopped: schedules stay active and their runs stay scheduled
    after = server.deployments()
    assert not any(d["paused"] for d in after.values())
    assert all(s["active"] for d in after.values() for s in d["schedules"])
    assert all(server.runs(after[n]["id"], ["SCHEDULED"]) for n in SCHEDULED)

    # a run asked for while nothing serves is picked up by the restarted process
    run = server.post(f"/deployments/{after['capture']['id']}/create_flow_run", {"parameters": {}})
    proc = start_serving(server, tmp_path)
    try:
        assert wait_for(lambda: server.run_state(run["id"]) == "COMPLETED", timeout=180, interval=1), \
            (tmp_path / "serve.log").read_text()[-3000:]
        assert list(settings.logs_dir.glob("daily-report-*.json"))  # the capture flow ran with our settings
        again = server.deployments()
        assert len(again) == 6 and all(actual_schedules(again[n]) == want[n] for n in again)
    finally:
        stop_serving(proc)


@pytest.mark.embedded
def test_prefect_yaml_deploys_the_same_schedules_to_a_work_pool(settings: Settings, prefect_server: PrefectServer,
                                                                tmp_path: Path) -> None:
    server = prefect_server
    env = {**os.environ, "PREFECT_API_URL": server.api, "PREFECT_HOME": str(tmp_path / "cli-home")}
    subprocess.run([str(PREFECT), "work-pool", "create", "intelrouter", "--type", "process"], env=env, check=True,
                   capture_output=True, timeout=120)
    out = subprocess.run([str(PREFECT), "--no-prompt", "deploy", "--all"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    deployments = server.deployments()
    want = expected_schedules(settings)
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert {d["name"] for d in config["deployments"]} == set(want)
    for name in want:
        assert deployments[name]["work_pool_name"] == "intelrouter"
        assert actual_schedules(deployments[name]) == want[name], name
    retrain = [a for a in server.post("/automations/filter") if a["name"] == "intelrouter-retrain-on-events"]
    assert [a["actions"][0]["deployment_id"] for a in retrain] == [deployments["train"]["id"]]  # issue 17's trigger

    # a worker runs a deployment from the pool
    snapshot = tmp_path / "export.jsonl"
    from intelrouter.labels import import_labels

    import_labels(load_settings(), REPO / "cli" / "demo_queries.csv", "text", "label", None)
    server.post(f"/deployments/{deployments['export']['id']}/create_flow_run",
                {"parameters": {"output": str(snapshot)}})
    worker = subprocess.run([str(PREFECT), "worker", "start", "--pool", "intelrouter", "--run-once"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    assert len(snapshot.read_text().splitlines()) == 322


def test_deploy_without_a_server_says_what_to_do(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "cli", "deploy"]
    none = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert none.returncode == 1 and none.stderr.startswith("error: cron schedules need a Prefect server")
    dead = subprocess.run([*cmd, "--api-url", f"http://127.0.0.1:{free_port()}/api"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert dead.returncode == 1 and "does not answer" in dead.stderr and "Traceback" not in dead.stderr
    zone = subprocess.run([sys.executable, "-m", "flows.deploy"], capture_output=True, text=True, timeout=120,
                          env={**env, "INTELROUTER_SCHEDULE_TIMEZONE": "Mars/Olympus",
                               "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    assert zone.returncode == 1 and zone.stderr.startswith("error: bad value for INTELROUTER_SCHEDULE_TIMEZONE")
