"""A retried training job finds what it registered before it failed, so it resumes instead of training again.

Every run a training job starts carries its job key (`recovery.JOB_TAG`): the Prefect task run id for the
scheduled flows (the same across the task's retries), a fresh one per `intelrouter train`. A retry looks the key up;
a run of that job with a registered version is resumed from the registry and the run itself: the gate decision
(`gate.json`), the metrics, the rows per split and the label counts it logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intelrouter import registry
from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError
from intelrouter.recovery import JOB_TAG


@dataclass
class Registered:
    """A job's registered version and what its run decided and logged."""

    run_id: str
    run_status: str
    version: str
    semver: str
    passed: bool
    reasons: list[str]
    metrics: dict[str, float]
    data: dict[str, Any] = field(default_factory=dict)  # rows per split, the split rule, label counts
    info: dict[str, Any] = field(default_factory=dict)  # the model's description from the version's tags


def find(settings: Settings, job_key: str) -> Registered | None:
    """The newest run of this job whose model was registered, or None (nothing registered: train afresh)."""
    client = registry.get_client(settings)
    experiment = registry.call(settings, "experiment", client.get_experiment_by_name, settings.mlflow_experiment)
    if experiment is None:
        return None
    runs = registry.call(settings, "runs", client.search_runs, [experiment.experiment_id],
                         f"tags.{JOB_TAG} = '{_quoted(job_key)}'", order_by=["attributes.start_time DESC"])
    for run in runs:
        versions = registry.call(settings, "model versions", client.search_model_versions,
                                 f"name = '{_quoted(settings.model_name)}' and run_id = '{run.info.run_id}'")
        if versions:
            return _registered(settings, client, run, versions[0])
    return None


def _registered(settings: Settings, client: Any, run: Any, mv: Any) -> Registered:
    tags, params = mv.tags, run.data.params
    try:
        gate = json.loads(Path(registry.call(settings, "artifact", client.download_artifacts, run.info.run_id,
                                             "gate.json")).read_text())
        passed, reasons = bool(gate["passed"]), [str(r) for r in gate["reasons"]]
    except (IntelRouterError, ValueError, KeyError, OSError):
        passed = run.data.tags.get("gate") == "passed"  # the tags hold the same decision, its reasons joined
        reasons = [r for r in run.data.tags.get("gate_reasons", "").split("; ") if r]
    sizes = {k: int(params.get(f"{k}_rows", 0)) for k in ("train", "val", "test")}
    data = {"rows": sum(sizes.values()), **sizes, "split": params.get("split", ""), "labels": _labels(client, run)}
    info = {k: tags[k] for k in ("semver", "threshold_policy", "feature_set", "classifier", "data_digest",
                                 "code_version") if k in tags}
    return Registered(run.info.run_id, run.info.status, str(mv.version), tags.get("semver", ""), passed, reasons,
                      dict(run.data.metrics), data, {**info, "resumed": True})


def _labels(client: Any, run: Any) -> dict[str, int]:
    try:
        return json.loads(Path(client.download_artifacts(run.info.run_id, "label_distribution.json")).read_text())
    except Exception:  # noqa: BLE001 - the counts only decorate the report
        return {}


def _quoted(value: str) -> str:
    return value.replace("'", "''")
