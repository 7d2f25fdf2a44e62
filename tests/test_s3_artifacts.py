"""MLflow artifacts in S3-compatible storage, end to end: train, register, serve by alias, roll back.

This is the README's scale-out path ("Scaling out"): `mlflow server` on PostgreSQL with
`--artifacts-destination s3://… --serve-artifacts`, as run against Supabase Storage or AWS S3. Neither can run
here, so the S3 server is moto's server mode (`moto_server`): an S3 *emulator* that answers the S3 HTTP API on a
loopback port. It stands in for the real storage; it is not Supabase Storage. Everything else is real:
PostgreSQL, `mlflow server`, and the product driven only through its CLI and `intelrouter serve`.
Only the tracking server holds the S3 endpoint and keys. The CLI uploads through it; downloads (training's
comparison with @production, serving) fetch each file from the bucket by a short-lived presigned URL the server
signs, MLflow 3's default for S3 behind `--serve-artifacts`: clients hold no keys but must reach the endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import sqlalchemy as sa
from conftest import wait_for
from training_support import VENV_BIN, cli_env, synthetic_rows, write_jsonl

from devservers.ports import free_port
from devservers.postgres import PostgresServer
from devservers.processes import running

BUCKET = "ml-models"
MODEL = "intelrouter"  # the default registered model name
USERS = [f"user-{i}" for i in range(20)]
# the emulator accepts any keys; region and path-style addressing are what Supabase Storage wants too
S3_SETTINGS = {"AWS_ACCESS_KEY_ID": "dummy-access-key", "AWS_SECRET_ACCESS_KEY": "dummy-secret-key",
               "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path"}


@dataclass
class S3Emulator:
    """moto's S3 emulator on a loopback port, with one bucket and the log of every request it answered."""

    endpoint: str
    log: Path

    def client(self) -> Any:
        """A boto3 S3 client on the emulator (credentials passed here, never put in this process's env)."""
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_SETTINGS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_SETTINGS["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str) -> list[str]:
        """Every object key in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Emulator]:
    """An S3 *emulator* (moto's server mode), standing in for Supabase Storage or AWS S3, with a fresh bucket.

    No real S3-compatible server installs here (no MinIO in the registries; Supabase's storage server needs
    Docker), so this emulator is the S3 endpoint of the test."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running("s3-emulator", args, cli_env(), f"{endpoint}/moto-api/", tmp_path / "s3-emulator") as log:
        emulator = S3Emulator(endpoint, log)
        emulator.client().create_bucket(Bucket=BUCKET)
        yield emulator


def create_database(pg_server: PostgresServer, name: str) -> str:
    """Create database `name` on the private PostgreSQL server; returns its SQLAlchemy URL."""
    admin = sa.create_engine(pg_server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return pg_server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def tracking_server(pg_server: PostgresServer, s3: S3Emulator, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on PostgreSQL storing artifacts in the S3 emulator's bucket and proxying them to clients."""
    port = free_port()
    args = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", create_database(pg_server, "mlflow"),
            "--artifacts-destination", f"s3://{BUCKET}/mlflow", "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = cli_env(MLFLOW_S3_ENDPOINT_URL=s3.endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **S3_SETTINGS)
    url = f"http://127.0.0.1:{port}"
    with running("mlflow-server", args, env, f"{url}/health", tmp_path / "mlflow-server"):
        yield url


def intelrouter(env: dict[str, str], *args: str) -> str:
    """Run `intelrouter ARGS` as a subprocess and return its stdout, asserting that it succeeded."""
    done = subprocess.run([str(VENV_BIN / "intelrouter"), *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"intelrouter {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def router_key(tracking_url: str, version: str, keys: list[str]) -> str:
    """The bucket key of the router.pkl of a registered version (found by its logged-model id, `models:/m-…`)."""
    res = httpx.get(f"{tracking_url}/api/2.0/mlflow/model-versions/get", params={"name": MODEL, "version": version})
    model_id = res.raise_for_status().json()["model_version"]["source"].removeprefix("models:/")
    found = [k for k in keys if f"/{model_id}/" in k and k.endswith("/router.pkl")]
    assert len(found) == 1, f"version {version} ({model_id}): no single router.pkl in s3://{BUCKET}: {keys}"
    return found[0]


def served(base: str) -> set[tuple[str, str]]:
    """(variant, model_version) of the answers POST /route gives the test's users."""
    got = set()
    for user in USERS:
        res = httpx.post(f"{base}/route", json={"text": "book a flight to rome", "user_id": user}, timeout=30)
        assert res.status_code == 200, res.text
        assert res.json()["label"] == "book_flight"
        got.add((res.json()["variant"], res.json()["model_version"]))
    return got


@pytest.mark.embedded  # brings its own PostgreSQL, S3 emulator and servers: once per CI run (the SQLite pass)
@pytest.mark.slow
def test_models_stored_in_s3_are_served_by_alias_and_rolled_back(
    pg_server: PostgresServer, s3: S3Emulator, tracking_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith(("AWS_", "MLFLOW_S3_"))]:
        monkeypatch.delenv(key)  # a developer's own S3 settings must not reach the CLI
    env = cli_env(INTELROUTER_DATABASE_URL=create_database(pg_server, "intelrouter"),
                  INTELROUTER_DATA_DIR=str(tmp_path / "data"), INTELROUTER_MLFLOW_TRACKING_URI=tracking_server)
    assert not [k for k in env if k.startswith(("AWS_", "MLFLOW_S3_"))], "only the tracking server holds S3 settings"

    trained = []
    for seed, per_label in ((1, 25), (2, 15)):
        labels = write_jsonl(tmp_path / f"labels-{seed}.jsonl", synthetic_rows(per_label, seed=seed))
        assert "imported" in intelrouter(env, "data", "import", str(labels))
        out = intelrouter(env, "train", "--min-samples", "20", "--json")
        trained.append(json.loads(out))  # stdout is the JSON alone (MLflow's "View run" links go to stderr)
    assert [(t["version"], t["lifecycle"]) for t in trained] == [("1", "production"), ("2", "canary")], trained

    # the models are objects in the bucket, and nothing was written to local disk instead
    keys = s3.keys("mlflow/")
    router_keys = [router_key(tracking_server, version, keys) for version in ("1", "2")]
    assert not list(tmp_path.rglob("router.pkl")), "a model landed on local disk, not in S3"

    log_before_serving = len(s3.log.read_text())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve_env = env | {"INTELROUTER_REGISTRY_POLL_SECONDS": "0.5"}
    with running("intelrouter-serve", [str(VENV_BIN / "intelrouter"), "serve", "--port", str(port)], serve_env,
                 f"{base}/health", tmp_path / "serve"):
        assert httpx.get(f"{base}/health").json()["versions"] == {"production": "1", "staging": "2"}
        # serving fetched both models from the bucket (by URLs the tracking server signed)
        fetched = s3.log.read_text()[log_before_serving:]
        for key in router_keys:
            assert f'"GET /{BUCKET}/{key}' in fetched, f"{key} was not read from S3 when serving started"
        answered = served(base)
        assert ("production", "1") in answered and answered <= {("production", "1"), ("staging", "2")}

        assert "@production -> version 2" in intelrouter(env, "promote", "2", "--to", "production")
        assert wait_for(lambda: served(base) == {("production", "2")}, timeout=120, interval=0.5)

        assert "@production -> version 1" in intelrouter(env, "rollback")
        assert wait_for(lambda: served(base) == {("production", "1")}, timeout=120, interval=0.5)
