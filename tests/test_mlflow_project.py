"""`mlflow run . -e train|evaluate` end to end: on a local SQLite tracking store and on a real `mlflow server`."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import wait_for
from training_support import REPO, VENV_BIN, cli_env, seed_ml_data, synthetic_rows, write_jsonl

from devservers.ports import free_port
from intelrouter import lifecycle, registry
from intelrouter.config import load_settings
from intelrouter.loading import load_router


def _mlflow_run(entry: str, tracking_uri: str, cwd: Path, *params: str) -> subprocess.CompletedProcess:
    args = [str(VENV_BIN / "mlflow"), "run", str(REPO), "-e", entry, "--env-manager", "local",
            "--experiment-name", "intelrouter"]
    for p in params:
        args += ["-P", p]
    env = cli_env(MLFLOW_TRACKING_URI=tracking_uri, INTELROUTER_MLFLOW_TRACKING_URI=tracking_uri)
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.embedded  # the all-SQLite combination; test_mlflow_run_against_a_tracking_server_on_postgres is the other
def test_mlflow_run_train_and_evaluate_on_sqlite(settings, tmp_path: Path) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(25, oos=10))
    done = _mlflow_run("train", settings.tracking_uri, tmp_path, "min_samples=20", "threshold_policy=balanced",
                       "C=5")
    assert done.returncode == 0, done.stderr[-3000:]
    mv = registry.alias_version(settings, "production")
    assert mv is not None and mv.tags["semver"] == "1.0.0" and mv.tags["lifecycle"] == "production"
    run = registry.get_client(settings).get_run(mv.run_id)
    # the run `mlflow run` created is the training run: project tags and ours on the same run
    assert run.data.tags["mlflow.project.entryPoint"] == "train" and run.data.tags["semver"] == "1.0.0"
    assert run.data.params["C"] == "5" and run.data.params["threshold_policy_used"] == "balanced"
    assert run.info.status == "FINISHED"
    router = load_router(f"models:/intelrouter/{mv.version}", settings.tracking_uri)
    assert router.predict_one("set an alarm for 7 am").top_label == "set_alarm"

    export = write_jsonl(tmp_path / "eval.jsonl", synthetic_rows(10, seed=9, split="test"))
    done = _mlflow_run("evaluate", settings.tracking_uri, tmp_path, f"model_uri=models:/intelrouter/{mv.version}",
                       f"source={export}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gate passed" in done.stdout and "40 rows" in done.stdout
    client = registry.get_client(settings)
    runs = client.search_runs([run.info.experiment_id], "tags.kind = 'evaluation'")
    assert len(runs) == 1 and runs[0].data.metrics["candidate_test_accuracy"] > 0.9


def test_mlflow_run_failure_exits_nonzero_and_registers_nothing(settings, tmp_path: Path) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(5))
    done = _mlflow_run("train", settings.tracking_uri, tmp_path)
    assert done.returncode != 0
    assert "Insufficient training data: 20 samples, need at least 50" in done.stderr
    assert registry.list_model_versions(settings) == []


@pytest.fixture
def mlflow_server(pg_server, tmp_path: Path) -> Iterator[str]:  # noqa: ANN001
    """A real `mlflow server` on the private PostgreSQL, proxying artifacts to a tmp dir."""
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("w")
    env = cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", pg_server.url, "--artifacts-destination",
         str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None  # stop waiting if it died

    try:
        assert wait_for(healthy, timeout=120), "mlflow server did not start"
        assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.postgres  # store and tracking server both on PostgreSQL: the production combination
def test_mlflow_run_against_a_tracking_server_on_postgres(settings, mlflow_server: str, tmp_path: Path) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(20, seed=11))
    done = _mlflow_run("train", mlflow_server, tmp_path, "min_samples=20")
    assert done.returncode == 0, done.stderr[-3000:]
    remote = load_settings(mlflow_tracking_uri=mlflow_server)
    mv = registry.alias_version(remote, "production")
    assert mv is not None and mv.tags["lifecycle"] == "production"
    client = registry.get_client(remote)
    run = client.get_run(mv.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # stored through the server
    assert (tmp_path / "server-artifacts").is_dir()
    router = load_router(f"models:/{remote.model_name}@production", mlflow_server)
    assert router.predict_one("book a flight to rome").top_label == "book_flight"
    # a second version goes to canary, and a rollback has no earlier production to go to
    seed_ml_data(settings, synthetic_rows(10, seed=12))
    done = _mlflow_run("train", mlflow_server, tmp_path, "min_samples=20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert registry.alias_version(remote, "staging").tags["semver"] == "1.1.0"
    lifecycle.promote(remote, "2", "production")
    assert str(lifecycle.rollback(remote).version) == "1"
