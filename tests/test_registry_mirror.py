"""The registry's mirror (model_versions, model_metadata) follows every move of a real MLflow registry, is
idempotent, drops versions the registry no longer has, and never fails a move when the database is down."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mirror_support import mirror, register_version
from training_support import on_shared_tracking, shared_tracking_uri  # noqa: F401 - a fixture

from devservers.ports import free_port
from intelrouter import lifecycle, registry, registry_mirror
from intelrouter import report as monitoring
from intelrouter.capture import log_queries, record_outcomes
from intelrouter.config import load_settings
from intelrouter.groundtruth import record_feedback


@pytest.fixture
def settings(settings, shared_tracking_uri: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201, F811
    """Each test has its own registered model on one shared tracking store (its schema is made once)."""
    return on_shared_tracking(monkeypatch, shared_tracking_uri)


def _state(settings) -> dict[str, tuple[str, float, bool]]:  # noqa: ANN001
    versions, metadata = mirror(settings)
    assert set(versions) == set(metadata)
    return {v: (r.status, r.traffic_percentage, bool(metadata[v].is_active)) for v, r in versions.items()}


def test_the_mirror_follows_every_move(settings, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2, v3 = (register_version(settings, tmp_path, f"1.{i}.0", 0.9) for i in range(3))
    lifecycle.apply_gate(settings, v1, True, ["first"])  # training's registration step
    assert _state(settings) == {v1: ("production", 100.0, True), v2: ("testing", 0.0, False),
                                v3: ("testing", 0.0, False)}
    lifecycle.apply_gate(settings, v2, True, ["no regression"])
    assert _state(settings)[v1] == ("production", 90.0, True) and _state(settings)[v2] == ("canary", 10.0, False)
    lifecycle.set_canary_share(settings, 0.5)  # the canary check raising the share
    assert _state(settings)[v1][1] == _state(settings)[v2][1] == 50.0
    lifecycle.promote(settings, v2, "production")
    assert _state(settings) == {v1: ("archived", 0.0, False), v2: ("production", 100.0, True),
                                v3: ("testing", 0.0, False)}
    lifecycle.rollback(settings)
    assert _state(settings) == {v1: ("production", 100.0, True), v2: ("rejected", 0.0, False),
                                v3: ("testing", 0.0, False)}
    lifecycle.promote(settings, v3, "staging")
    assert _state(settings)[v3] == ("canary", 10.0, False)
    lifecycle.clear_staging(settings, "canary rolled back")
    assert _state(settings)[v3] == ("rejected", 0.0, False) and _state(settings)[v1] == ("production", 100.0, True)


def test_metadata_comes_from_the_tags_and_the_run(settings, tmp_path: Path) -> None:  # noqa: ANN001
    version = register_version(settings, tmp_path, "1.0.0", 0.875, macro_f1=0.81, threshold=0.42)
    lifecycle.promote(settings, version, "production")
    versions, metadata = mirror(settings)
    row, meta = versions[version], metadata[version]
    assert (row.semver, row.test_accuracy, row.answered, row.labelled) == ("1.0.0", 0.875, 0, 0)
    assert row.production_accuracy is None and row.fallback_rate is None  # no traffic yet
    assert (meta.accuracy, meta.f1_score, meta.confidence_threshold) == (0.875, 0.81, 0.42)
    assert meta.metrics == {"recent_accuracy": 0.865, "test_accuracy": 0.875, "test_macro_f1": 0.81}
    mv = registry.get_version(settings, version)
    assert meta.run_id == mv.run_id and meta.training_timestamp is not None and meta.created_at is not None


def test_traffic_numbers_follow_the_answers_and_the_callers_outcomes(settings, tmp_path: Path) -> None:  # noqa: ANN001
    version = register_version(settings, tmp_path, "1.0.0", 0.9)
    lifecycle.promote(settings, version, "production")
    log_queries(settings, [
        {"id": f"q{i}", "text": f"text {i}", "predicted_label": "UNCERTAIN" if i == 3 else "a", "top_label": "a",
         "confidence": 0.3 if i == 3 else 0.9, "uncertain": i == 3, "model_version": version,
         "variant": "production"} for i in range(4)])
    record_feedback(settings, "q0", "a")
    record_feedback(settings, "q1", "b")
    # the caller sent q0 to a human (a fallback) and answered q3 (UNCERTAIN) from its search index (not one)
    record_outcomes(settings, [{"query_id": "q0", "route_taken": "human"}, {"query_id": "q3", "route_taken": "php"}])
    assert mirror(settings)[0][version].answered == 0  # the traffic came after the last move
    monitoring.write(settings, monitoring.collect(settings))  # the daily report (capture flow, `intelrouter report`)
    row = mirror(settings)[0][version]
    assert (row.answered, row.labelled, row.production_accuracy, row.fallback_rate) == (4, 2, 0.5, 0.25)


def test_refresh_is_idempotent_and_drops_versions_gone_from_the_registry(settings, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2 = (register_version(settings, tmp_path, f"1.{i}.0", 0.9) for i in range(2))
    lifecycle.promote(settings, v1, "production")
    first = mirror(settings)
    assert registry_mirror.refresh(settings) == 2 and registry_mirror.refresh(settings) == 2
    again = mirror(settings)
    assert set(again[0]) == set(first[0]) == {v1, v2}
    for before, after in zip(first, again, strict=True):
        for v in before:  # the same rows (only updated_at moves)
            assert {k: val for k, val in before[v]._mapping.items() if k != "updated_at"} == {
                k: val for k, val in after[v]._mapping.items() if k != "updated_at"}
    registry.get_client(settings).delete_model_version(settings.model_name, v2)
    assert registry_mirror.refresh(settings) == 1
    assert set(mirror(settings)[0]) == set(mirror(settings)[1]) == {v1}


def test_a_database_that_is_down_never_fails_the_move(shared_tracking_uri: str,  # noqa: F811
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("INTELROUTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INTELROUTER_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")
    settings = on_shared_tracking(monkeypatch, shared_tracking_uri)
    version = register_version(settings, tmp_path, "1.0.0", 0.9)
    with caplog.at_level(logging.WARNING, logger="intelrouter.registry_mirror"):
        assert str(lifecycle.promote(settings, version, "production").version) == version
    assert str(registry.alias_version(settings, "production").version) == version  # the move happened
    assert any("registry mirror" in r.getMessage() and "unreachable" in r.getMessage() for r in caplog.records)
    assert registry_mirror.refresh(settings) is None


def test_an_unreachable_registry_is_a_warning(settings, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    down = load_settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="intelrouter.registry_mirror"):
        assert registry_mirror.refresh(down) is None
    assert any("not refreshed" in r.getMessage() for r in caplog.records)
    assert mirror(settings) == ({}, {})
