"""Helpers of the registry-mirror and seed-SQL tests: versions registered in a real MLflow registry, with a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from intelrouter import registry, store
from intelrouter.registry_mirror import model_metadata, model_versions


def register_version(settings: Any, tmp_path: Path, semver: str, accuracy: float, macro_f1: float = 0.8,
                     threshold: float = 0.55) -> str:
    """Register a version whose run logged metrics (a placeholder artifact: moves and the mirror never load it)."""
    client = registry.get_client(settings)
    try:
        client.get_registered_model(settings.model_name)
    except Exception:  # noqa: BLE001 - the first version creates the registered model
        client.create_registered_model(settings.model_name)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        settings.mlflow_experiment, artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment_id)
    for key, value in (("test_accuracy", accuracy), ("test_macro_f1", macro_f1), ("recent_accuracy", accuracy - 0.01)):
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    source = tmp_path / f"model-{semver}"
    source.mkdir(exist_ok=True)
    tags = {"semver": semver, "lifecycle": "testing", "test_accuracy": f"{accuracy:.4f}",
            "test_macro_f1": f"{macro_f1:.4f}", "threshold": f"{threshold:.6f}"}
    mv = client.create_model_version(settings.model_name, source=str(source), run_id=run.info.run_id, tags=tags)
    return str(mv.version)


def mirror(settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mirror's rows by version: (model_versions, model_metadata)."""
    with store.connect(settings) as conn:
        versions = {r.version: r for r in conn.execute(sa.select(model_versions))}
        metadata = {r.version: r for r in conn.execute(sa.select(model_metadata))}
    return versions, metadata
