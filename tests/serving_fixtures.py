"""Fixtures and helpers of the serving tests (a pytest plugin, see tests/conftest.py).

A small CLINC150 model is trained and registered once per session with the real training job into a SQLite
tracking store; each test gets its own copy of that store and a fresh database, so alias moves in one test
never leak into another.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import DATASETS
from fastapi.testclient import TestClient

from intelrouter import lifecycle, registry, store
from intelrouter.config import Settings, load_settings
from serving.app import create_app

INTENTS = ["balance", "transfer", "weather", "timer", "alarm", "translate", "flight_status", "book_hotel"]
CLI = [sys.executable, "-m", "cli"]
POLL = 0.2
TRAIN_SCRIPT = """
import sys
from pathlib import Path
from intelrouter.config import load_settings
from intelrouter.jobs import train
from intelrouter.labels import import_labels
settings = load_settings()
import_labels(settings, Path(sys.argv[1]))
result = train(settings)
print(result.version, result.lifecycle)
"""


def _write_rows(path: Path, per_intent: int, offset: int) -> None:
    """A CSV of `per_intent` CLINC150 training texts per intent, from `offset` on."""
    rows = [r for r in csv.DictReader((DATASETS / "clinc150" / "clinc150_full.csv").open(encoding="utf-8"))
            if r["split"] == "train" and r["label"] in INTENTS]
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r["text"])
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for label, texts in by_label.items():
            w.writerows((t, label) for t in texts[offset: offset + per_intent])


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracking store holding two trained versions of a small CLINC150 router (v1 is @production)."""
    root = tmp_path_factory.mktemp("registry")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "MLFLOW_TRACKING"))}
    env.update({"INTELROUTER_DATA_DIR": str(root / "data"), "INTELROUTER_DATABASE_URL": f"sqlite:///{root}/ir.db",
                "INTELROUTER_MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"})
    for per_intent, offset in ((30, 0), (30, 30)):
        data = root / f"rows-{offset}.csv"
        _write_rows(data, per_intent, offset)
        # in a subprocess: training sets MLflow's process-wide tracking URI, which must not leak into tests
        res = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(data)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, f"training failed: {res.stdout}{res.stderr}"
    return root


def use_registry(template: Path, tmp_path: Path, production: str | None = "1", staging: str | None = None,
                  share: float | None = None) -> None:
    """Copy the template store to where the `settings` fixture points, with the aliases a test wants."""
    shutil.copy(template / "mlflow.db", tmp_path / "mlflow.db")
    s = load_settings()
    client = registry.get_client(s)
    for alias, version in (("production", production), ("staging", staging)):
        if version is None:
            if registry.alias_version(s, alias) is not None:
                client.delete_registered_model_alias(s.model_name, alias)
        else:
            client.set_registered_model_alias(s.model_name, alias, version)
    lifecycle.set_canary_share(s, share if share is not None else 0.0)


@pytest.fixture
def serve_settings(settings: Settings, registry_template: Path, tmp_path: Path) -> Settings:
    """Settings on a copy of the trained registry (v1 @production, no canary) and a fresh database."""
    use_registry(registry_template, tmp_path)
    return load_settings(registry_poll_seconds=POLL, routes={"balance": "banking-agent"}, fallback_route="human")


@pytest.fixture
def client(serve_settings: Settings) -> Iterator[TestClient]:
    """The app, started (models loaded, log writer running) and stopped around the test."""
    with TestClient(create_app(serve_settings)) as c:
        yield c


def route(client: Any, text: str = "what is my bank balance", **extra: Any) -> dict[str, Any]:
    """POST /route and return the JSON answer (asserting 200)."""
    res = client.post("/route", json={"text": text, **extra})
    assert res.status_code == 200, res.text
    return res.json()


def query_rows(settings: Settings) -> dict[str, Any]:
    """Stored queries by id."""
    with store.connect(settings) as conn:
        return {r.id: r for r in conn.execute(sa.select(store.queries))}


def health(client: Any) -> dict[str, Any]:
    """GET /health as JSON."""
    return client.get("/health").json()
