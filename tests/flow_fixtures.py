"""Fixtures and helpers of the flow tests (a pytest plugin, see tests/conftest.py): one Prefect test server for the
session, flows run to completion, their artifacts read back, and router traffic to feed them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from intelrouter import store
from intelrouter.capture import log_queries
from intelrouter.config import Settings
from intelrouter.groundtruth import record_feedback


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


def router_traffic(settings: Settings, n: int, version: str = "1", variant: str = "production",
                   correct: int = 0, tag: str = "q", hours_ago: float = 1.0) -> list[str]:
    """`n` answers of the router as logged queries, the first `correct` of them labelled by users (4 in 5 right)."""
    when = store.utcnow() - timedelta(hours=hours_ago)
    ids = [f"{tag}-{i}" for i in range(n)]
    log_queries(settings, [{"id": qid, "text": f"{tag} text {i}", "predicted_label": "easy", "top_label": "easy",
                            "confidence": 0.5 + i / (4 * n), "uncertain": False, "model_version": version,
                            "variant": variant, "created_at": when} for i, qid in enumerate(ids)])
    for i, qid in enumerate(ids[:correct]):
        record_feedback(settings, qid, "easy" if i % 5 else "hard")
    return ids
