"""Registry lifecycle moves against a real MLflow SQLite tracking store: gate outcomes, promote, rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from training_support import on_shared_tracking, shared_tracking_uri  # noqa: F401 - a fixture

from devservers.ports import free_port
from intelrouter import lifecycle, loading, registry
from intelrouter.config import load_settings
from intelrouter.errors import InputError, NoActiveModelError, NotFoundError, RegistryError


@pytest.fixture
def settings(settings, shared_tracking_uri: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201, F811
    """Each test has its own registered model on one shared tracking store (its schema is made once)."""
    return on_shared_tracking(monkeypatch, shared_tracking_uri)


@pytest.fixture
def client(settings):  # noqa: ANN001, ANN201
    return registry.get_client(settings)


def _version(settings, client, tmp_path: Path, semver: str = "1.0.0", feature_set: str = "fs1") -> str:  # noqa: ANN001
    """Register a version (a placeholder artifact: lifecycle moves never load the model)."""
    try:
        client.get_registered_model(settings.model_name)
    except Exception:
        client.create_registered_model(settings.model_name)
    source = tmp_path / f"model-{semver}"
    source.mkdir(exist_ok=True)
    mv = client.create_model_version(settings.model_name, source=str(source),
                                     tags={"semver": semver, "lifecycle": "testing", "feature_set": feature_set})
    return str(mv.version)


def _tags(client, settings, version: str) -> dict[str, str]:  # noqa: ANN001
    return client.get_model_version(settings.model_name, version).tags


def _alias(settings, alias: str) -> str | None:  # noqa: ANN001
    mv = registry.alias_version(settings, alias)
    return None if mv is None else str(mv.version)


def test_passing_first_version_becomes_production(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1 = _version(settings, client, tmp_path)
    assert lifecycle.apply_gate(settings, v1, True, ["test accuracy 0.9 >= minimum 0.5"]) == "production"
    assert _alias(settings, "production") == v1 and _alias(settings, "staging") is None
    tags = _tags(client, settings, v1)
    assert tags["lifecycle"] == "production" and tags["gate"] == "passed"
    assert "minimum" in tags["gate_reasons"]
    assert registry.production_history(settings) == [v1]


def test_passing_version_with_a_production_becomes_the_canary(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2 = _version(settings, client, tmp_path), _version(settings, client, tmp_path, "1.1.0")
    lifecycle.apply_gate(settings, v1, True, [])
    lifecycle.set_canary_share(settings, 0.5)
    assert lifecycle.apply_gate(settings, v2, True, []) == "canary"
    assert _alias(settings, "production") == v1 and _alias(settings, "staging") == v2
    assert _tags(client, settings, v2)["lifecycle"] == "canary"
    assert registry.canary_share(settings) == pytest.approx(settings.canary_share)  # a new canary starts small


def test_failed_gate_rejects_and_moves_no_alias(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2 = _version(settings, client, tmp_path), _version(settings, client, tmp_path, "1.1.0")
    lifecycle.apply_gate(settings, v1, True, [])
    assert lifecycle.apply_gate(settings, v2, False, ["test accuracy -0.15 vs production (regression)"]) == "rejected"
    assert _alias(settings, "production") == v1 and _alias(settings, "staging") is None
    tags = _tags(client, settings, v2)
    assert tags["lifecycle"] == "rejected" and tags["gate"] == "failed"
    assert "regression" in tags["rejected_reason"]


def test_promote_canary_to_production_archives_the_old_one(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2 = _version(settings, client, tmp_path), _version(settings, client, tmp_path, "1.1.0")
    lifecycle.apply_gate(settings, v1, True, [])
    lifecycle.apply_gate(settings, v2, True, [])
    lifecycle.promote(settings, v2, "production")
    assert _alias(settings, "production") == v2 and _alias(settings, "staging") is None
    assert _tags(client, settings, v2)["lifecycle"] == "production"
    assert _tags(client, settings, v1)["lifecycle"] == "archived"
    assert registry.production_history(settings) == [v1, v2]
    lifecycle.promote(settings, v2, "production")  # idempotent
    assert registry.production_history(settings) == [v1, v2]


def test_promote_by_semver_and_to_staging(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2 = _version(settings, client, tmp_path), _version(settings, client, tmp_path, "1.1.0")
    lifecycle.promote(settings, "v1.0.0", "production")
    lifecycle.promote(settings, "1.1.0", "staging")
    assert _alias(settings, "production") == v1 and _alias(settings, "staging") == v2
    with pytest.raises(InputError, match="already @production"):
        lifecycle.promote(settings, v1, "staging")


def test_rollback_restores_the_previous_production_in_one_step(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2, v3 = (_version(settings, client, tmp_path, s) for s in ("1.0.0", "1.1.0", "1.2.0"))
    for v in (v1, v2, v3):
        lifecycle.promote(settings, v, "production")
    assert registry.production_history(settings) == [v1, v2, v3]
    assert str(lifecycle.rollback(settings).version) == v2
    assert _alias(settings, "production") == v2
    assert _tags(client, settings, v3)["lifecycle"] == "rejected"
    assert _tags(client, settings, v2)["lifecycle"] == "production"
    assert str(lifecycle.rollback(settings).version) == v1
    with pytest.raises(RegistryError, match="no earlier production version"):
        lifecycle.rollback(settings)
    assert _alias(settings, "production") == v1  # the failed rollback changed nothing
    assert registry.production_history(settings) == [v1]


def test_rollback_skips_a_deleted_version(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2, v3 = (_version(settings, client, tmp_path, s) for s in ("1.0.0", "1.1.0", "1.2.0"))
    for v in (v1, v2, v3):
        lifecycle.promote(settings, v, "production")
    client.delete_model_version(settings.model_name, v2)
    assert str(lifecycle.rollback(settings).version) == v1


def test_rollback_without_production_says_to_train(settings) -> None:  # noqa: ANN001
    with pytest.raises(NoActiveModelError, match="No active model found: run `intelrouter train`"):
        lifecycle.rollback(settings)


def test_missing_version_and_unknown_alias_are_not_found(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1 = _version(settings, client, tmp_path)
    lifecycle.promote(settings, v1, "production")
    with pytest.raises(NotFoundError, match="has no version 42"):
        lifecycle.promote(settings, "42", "production")
    with pytest.raises(NotFoundError, match="unknown alias 'champion'"):
        registry.alias_version(settings, "champion")
    with pytest.raises(InputError, match="cannot promote to 'canary'"):
        lifecycle.promote(settings, v1, "canary")  # type: ignore[arg-type]
    assert _alias(settings, "production") == v1


def test_clear_staging_rejects_the_canary(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2 = _version(settings, client, tmp_path), _version(settings, client, tmp_path, "1.1.0")
    lifecycle.promote(settings, v1, "production")
    lifecycle.promote(settings, v2, "staging")
    lifecycle.set_canary_share(settings, 0.5)
    assert str(lifecycle.clear_staging(settings, "canary accuracy fell").version) == v2
    assert _alias(settings, "staging") is None and _alias(settings, "production") == v1
    assert _tags(client, settings, v2)["rejected_reason"] == "canary accuracy fell"
    assert registry.canary_share(settings) == settings.canary_share
    assert lifecycle.clear_staging(settings, "again") is None


def test_canary_share_default_set_and_bounds(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    assert registry.canary_share(settings) == settings.canary_share  # no registered model yet
    _version(settings, client, tmp_path)
    lifecycle.set_canary_share(settings, 0.25)
    assert registry.canary_share(settings) == 0.25
    with pytest.raises(InputError, match="outside 0..1"):
        lifecycle.set_canary_share(settings, 1.5)


def test_semver_minor_per_retrain_major_on_new_features(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    assert registry.next_semver(settings, "fs1") == "1.0.0"
    _version(settings, client, tmp_path, "1.0.0", "fs1")
    assert registry.next_semver(settings, "fs1") == "1.1.0"
    _version(settings, client, tmp_path, "1.1.0", "fs1")
    assert registry.next_semver(settings, "fs2") == "2.0.0"


def test_history_tag_is_json_and_listed_versions(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    v1, v2 = _version(settings, client, tmp_path), _version(settings, client, tmp_path, "1.1.0")
    lifecycle.apply_gate(settings, v1, True, [])
    lifecycle.apply_gate(settings, v2, True, [])
    raw = client.get_registered_model(settings.model_name).tags[registry.HISTORY_TAG]
    assert json.loads(raw) == [v1]
    rows = registry.describe_versions(settings)
    assert [(r["version"], r["semver"], r["lifecycle"], r["aliases"]) for r in rows] == [
        (v2, "1.1.0", "canary", ["staging"]), (v1, "1.0.0", "production", ["production"])]


def test_unreachable_tracking_server_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    settings = load_settings(data_dir=tmp_path, mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryError) as info:
        registry.alias_version(settings, "production")
    message = str(info.value)
    assert "unreachable" in message and "\n" not in message and "INTELROUTER_MLFLOW_TRACKING_URI" in message
    with pytest.raises(RegistryError):
        lifecycle.promote(settings, "1", "production")


def test_corrupt_or_missing_model_artifacts_are_one_clear_error(settings, client, tmp_path: Path) -> None:  # noqa: ANN001
    from intelrouter.loading import load_router

    v1 = _version(settings, client, tmp_path)
    (tmp_path / "model-1.0.0" / "artifacts").mkdir()
    (tmp_path / "model-1.0.0" / "artifacts" / "router.pkl").write_bytes(b"\x80\x05 not a pickle at all")
    lifecycle.promote(settings, v1, "production")
    with pytest.raises(RegistryError, match="corrupt or unreadable"):
        load_router(f"models:/{settings.model_name}@production", settings.tracking_uri)
    v2 = _version(settings, client, tmp_path, "1.1.0")  # no router.pkl at all
    with pytest.raises(RegistryError, match="not an IntelRouter model"):
        loading.load_version(settings, v2)
    with pytest.raises(NotFoundError, match="not found"):
        load_router(f"models:/{settings.model_name}/99", settings.tracking_uri)
    with pytest.raises(NotFoundError, match="not found"):
        load_router(f"models:/{settings.model_name}@staging", settings.tracking_uri)
    assert loading.load_alias(settings, "staging") is None
    assert _alias(settings, "production") == v1
