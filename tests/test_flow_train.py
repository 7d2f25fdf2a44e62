"""The training flows: the weekly rule and the 30-day run (flows/train.py) over the retrain loop, and export."""

from __future__ import annotations

from pathlib import Path

from conftest import DATASETS
from flow_fixtures import artifacts, run
from sqlalchemy import select

from intelrouter import lifecycle, registry, store
from intelrouter.config import Settings
from intelrouter.labels import import_labels

SAMPLES = Path(__file__).resolve().parents[1] / "cli" / "demo_queries.csv"


def test_train_flow_skips_then_trains_then_puts_the_next_version_on_canary(flow_settings: Settings) -> None:
    from flows.train import train

    s = flow_settings
    too_few, _ = run(train, force=True)  # the 30-day run on an empty store: a logged skip, not a failure
    assert too_few["trained"] is False and "Insufficient training data: 0 samples" in too_few["reason"]
    import_labels(s, SAMPLES, "text", "label", None)
    skipped, _ = run(train)
    assert skipped["trained"] is False and "weekly trigger is 500" in skipped["reason"]
    assert registry.alias_version(s, "production") is None

    first, _ = run(train, force=True)  # the 30-day schedule's run
    assert first["trained"] and first["lifecycle"] == "production" and first["gate_passed"]
    assert first["aliases"]["production"] == first["version"]
    snapshot = Path(first["snapshot"])
    assert first["snapshot_rows"] == 322 and len(snapshot.read_text().splitlines()) == 322
    assert Path(first["report"]).name == "training-router-v1.0.0.json"
    with store.connect(s) as conn:
        trained = conn.execute(select(store.ml_data.c.trained_version)).scalars().all()
    # every row the version used (held-out ones too) is marked: nothing stays "unused" to re-trigger training
    assert trained.count("1.0.0") == first["trained_rows"] == 322 and trained.count(None) == 0
    quiet, _ = run(train, overrides={"weekly_trigger": 1})
    assert quiet["trained"] is False and quiet["waiting"] == 0

    second, _ = run(train, force=True)
    assert second["trained"] and second["semver"] == "1.1.0"
    assert second["lifecycle"] == "canary" and second["aliases"] == {
        "production": first["version"], "staging": second["version"], "canary_share": 0.1}
    retrain = artifacts(key="intelrouter-retrain")["intelrouter-retrain"]
    assert "v1.1.0" in retrain.data and "canary" in retrain.data


def test_export_flow_writes_a_snapshot(flow_settings: Settings, tmp_path: Path) -> None:
    from flows.export import export

    import_labels(flow_settings, DATASETS / "banking77" / "test.csv", "text", "category", None)
    out = tmp_path / "snap.jsonl"
    result, run_id = run(export, output=str(out), limit=100)
    assert result == {"path": str(out), "rows": 100}
    assert len(out.read_text().splitlines()) == 100
    assert "100" in artifacts(run_id)["intelrouter-export"].data


def test_a_retry_after_registering_finishes_the_move_without_training_again(
    flow_settings: Settings, monkeypatch
) -> None:  # noqa: ANN001
    from flows.train import train
    from intelrouter.errors import RegistryError

    import_labels(flow_settings, SAMPLES, "text", "label", None)
    real, calls = lifecycle.apply_gate, []

    def unreachable_once(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 1:  # the version is registered; then the tracking server drops out
            raise RegistryError("model registry at http://mlflow:5000 is unreachable (connection refused)")
        return real(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "apply_gate", unreachable_once)
    result, _ = run(train, force=True)  # Prefect retries the task (the same task run id: the same job)
    assert len(calls) == 2 and result["trained"] and result["lifecycle"] == "production"
    assert [str(mv.version) for mv in registry.list_model_versions(flow_settings)] == ["1"]
    assert result["trained_rows"] == 322


def test_a_second_training_skips_while_one_runs(flow_settings: Settings) -> None:
    from training_support import another_training

    from flows.train import train

    with another_training(flow_settings):  # the other schedule's run
        result, _ = run(train, force=True, overrides={"training_lock_wait_seconds": 0})
        assert result["trained"] is False
        assert result["reason"].startswith("skipped: another training is running since ")
    assert registry.list_model_versions(flow_settings) == []
