"""The model holder (serving/state.py): alias moves and the canary share followed without a restart, and the last
good models kept serving when the registry goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import wait_for
from fastapi.testclient import TestClient
from serving_fixtures import CLI, health, query_rows, route

from devservers.ports import free_port
from intelrouter import lifecycle
from intelrouter.config import Settings


def test_alias_move_is_picked_up_without_restart(client: TestClient, serve_settings: Settings) -> None:
    assert route(client)["model_version"] == "1"
    lifecycle.promote(serve_settings, "2", "production")
    assert wait_for(lambda: health(client)["versions"]["production"] == "2", timeout=60)
    assert {route(client, f"balance please {i}")["model_version"] for i in range(10)} == {"2"}
    lifecycle.rollback(serve_settings)
    assert wait_for(lambda: health(client)["versions"]["production"] == "1", timeout=60)
    assert route(client)["model_version"] == "1"


def test_canary_share_sends_sticky_users_to_staging(client: TestClient, serve_settings: Settings) -> None:
    lifecycle.promote(serve_settings, "2", "staging")
    lifecycle.set_canary_share(serve_settings, 0.5)
    assert wait_for(lambda: health(client)["versions"]["staging"] == "2" and health(client)["canary_share"] == 0.5,
                    timeout=60)
    first = {f"user-{i}": route(client, user_id=f"user-{i}") for i in range(40)}
    variants = {a["variant"] for a in first.values()}
    assert variants == {"production", "staging"}
    for user, a in first.items():  # sticky: the same user lands on the same model again
        again = route(client, "set an alarm", user_id=user)
        assert again["variant"] == a["variant"]
        assert again["model_version"] == ("2" if a["variant"] == "staging" else "1")

    lifecycle.set_canary_share(serve_settings, 0.0)  # the share changes without a restart too
    assert wait_for(lambda: health(client)["canary_share"] == 0.0, timeout=60)
    assert {route(client, user_id=u)["variant"] for u in first} == {"production"}
    lifecycle.clear_staging(serve_settings, "test over")
    assert wait_for(lambda: health(client)["versions"]["staging"] is None, timeout=60)


def _start_mlflow_server(backend: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{backend}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(10)


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_real_uvicorn_keeps_answering_when_the_mlflow_server_dies(
    serve_settings: Settings, tmp_path: Path
) -> None:
    """`intelrouter serve` on a loopback port, its registry a real `mlflow server` that is then killed."""
    mlflow_port, port = free_port(), free_port()
    tracker = _start_mlflow_server(tmp_path / "mlflow.db", mlflow_port, tmp_path / "mlflow-server.log")
    env = {**os.environ, "INTELROUTER_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
           "INTELROUTER_REGISTRY_POLL_SECONDS": "0.5", "INTELROUTER_ROUTES": '{"balance": "banking-agent"}'}
    server = None
    try:
        assert wait_for(lambda: _up(f"http://127.0.0.1:{mlflow_port}/health"), timeout=120), \
            (tmp_path / "mlflow-server.log").read_text()[-2000:]
        server = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _up(f"{base}/health"), timeout=120), "intelrouter serve never became ready"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/health").json()["versions"] == {"production": "1", "staging": None}
            before = [route(http, f"what is my balance {i}", user_id=f"u{i}") for i in range(10)]
            assert {a["route"] for a in before} == {"banking-agent"}

            _stop(tracker, signal.SIGKILL)  # the registry is gone
            assert wait_for(lambda: http.get("/health").json()["registry"]["poll_failures"] >= 1, timeout=120)
            after = [route(http, f"set an alarm for {i}") for i in range(10)]
            assert {(a["label"], a["model_version"]) for a in after} == {("alarm", "1")}
            h = http.get("/health")
            assert h.status_code == 200 and h.json()["ready"] is True
            assert "model registry" in h.json()["registry"]["last_error"]
            qid = after[0]["query_id"]
            assert http.post("/feedback", json={"query_id": qid, "label": "alarm"}).status_code == 200
            assert "intelrouter_registry_poll_failures_total" in http.get("/metrics").text
        # SIGTERM: a graceful shutdown that flushes the log (uvicorn re-raises the signal once done)
        assert _stop(server) in (0, -signal.SIGTERM)
        output = server.stdout.read() if server.stdout else ""
        assert "Application shutdown complete" in output, output[-3000:]
        server = None
    finally:
        if server is not None:
            _stop(server)
        _stop(tracker, signal.SIGKILL)
    assert {a["query_id"] for a in before + after} <= set(query_rows(serve_settings))
