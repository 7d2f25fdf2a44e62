"""Shared fixtures: settings on a fresh database (SQLite, or PostgreSQL when the CI pass asks for it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devservers.postgres import PG_BIN, PostgresServer
from intelrouter.config import telemetry_off

telemetry_off()
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# The PostgreSQL pass of CI sets this to an admin URL of a throwaway server; each test gets its own database.
PG_ADMIN_URL = os.environ.get("INTELROUTER_TEST_PG_URL")
pytest_plugins = ["flow_fixtures", "serving_fixtures"]  # fixtures shared by the flow and the serving tests
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATASETS = SHARED / "datasets"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Split the suite between CI's two passes so that nothing runs twice for nothing.

    The SQLite pass runs every test but those marked `postgres`. The PostgreSQL pass runs only the tests that use
    the database under test (the `database_url` fixture, directly or through `settings`) and are not marked
    `embedded`: the others do not touch that database and already ran in the SQLite pass."""
    kept, deselected = [], []
    for item in items:
        if PG_ADMIN_URL:
            keep = "database_url" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("embedded")
        else:
            keep = item.get_closest_marker("postgres") is None
        (kept if keep else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No INTELROUTER_* or MLFLOW_TRACKING_URI from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("INTELROUTER_") and key != "INTELROUTER_TEST_PG_URL":
            monkeypatch.delenv(key)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("INTELROUTER_TEST_PG_URL", raising=False)


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database in the PG pass."""
    if not PG_ADMIN_URL:
        yield f"sqlite:///{tmp_path / 'intelrouter.db'}"
        return
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    from intelrouter import store

    store.dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Settings on a fresh database and a tmp data dir, also exported as env vars for CLI runs."""
    from intelrouter.config import load_settings

    data_dir = tmp_path / "data"
    monkeypatch.setenv("INTELROUTER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("INTELROUTER_DATABASE_URL", database_url)
    monkeypatch.setenv("INTELROUTER_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield load_settings()
    from intelrouter import store

    store.dispose_engines()


@pytest.fixture
def pg_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for tests that stop the database on purpose."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL binaries not found in {PG_BIN}: `apt-get install postgresql` (see .ci/run)")
    # not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="intelrouter-pg-"))
    server = PostgresServer(root).init()
    server.start()
    yield server
    try:
        server.stop()
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Label Studio for the whole session, from its own venv (each test works in its own project)."""
    from devservers.labelstudio import LabelStudioMissing, LabelStudioServer

    try:
        server = LabelStudioServer.from_template(tmp_path_factory.mktemp("labelstudio"))
    except LabelStudioMissing as exc:
        pytest.fail(str(exc))
    server.start()
    yield server
    server.stop()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1) -> bool:  # noqa: ANN001
    """Poll `predicate` until it is truthy or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
