"""The retrain loop: export a snapshot -> train -> gate -> register -> alias (testing, canary or production).

Training, the gate, registration and the alias move are one library call (`intelrouter.jobs.train`); this flow
holds the lifecycle lock from the snapshot to the alias move (one training at a time), trains on exactly the file
it snapshotted, and reports where the aliases ended up. The training task's retries carry its task run id as the
job key, so a retry after the version was registered finishes the move instead of training again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import DATABASE, TRACKING, settings_from
from flows.export import default_output
from intelrouter.config import Settings
from intelrouter.export import export_jsonl
from intelrouter.jobs import TrainResult, train
from intelrouter.locks import training_lock
from intelrouter.train import TrainOptions


@task(cache_policy=NO_CACHE, **DATABASE)
def snapshot(settings: Settings) -> tuple[Path, int]:
    """Export all approved ground truth to a JSONL file the run trains on (kept for `mlflow run`)."""
    path = default_output(settings)
    return path, export_jsonl(settings, path)


@task(cache_policy=NO_CACHE, **TRACKING)
def fit_gate_register(settings: Settings, source: Path) -> TrainResult:
    """Fit and evaluate a version, gate it against @production, register it and move its alias."""
    from prefect.runtime import task_run

    return train(settings, TrainOptions(source=str(source)), job_key=f"prefect-task-run-{task_run.id}")


def summary(result: TrainResult) -> dict[str, Any]:
    """A JSON-friendly account of one retrain."""
    keys = ("test_accuracy", "test_macro_f1", "recent_accuracy", "test_uncertain_rate")
    return {
        "version": result.version, "semver": result.semver, "lifecycle": result.lifecycle,
        "gate_passed": result.gate.passed, "gate_reasons": result.gate.reasons, "run_id": result.run_id,
        "threshold": result.threshold, "metrics": {k: result.metrics[k] for k in keys if k in result.metrics},
        "report": str(result.report_path) if result.report_path else None, "aliases": result.aliases,
        "trained_rows": result.marked_rows, "shadow": _shadow_summary(result.shadow),
    }


def _shadow_summary(shadow: dict[str, Any] | None) -> dict[str, Any] | None:
    """The shadow verdict without the report's per-label detail."""
    if shadow is None:
        return None
    report = shadow.get("report") or {}
    return {"status": shadow["status"], "reasons": shadow["reasons"], "note": shadow["note"],
            **{k: report[k] for k in ("rows", "agreement", "uncertain_change", "estimate_change") if k in report}}


@flow(name="retrain-loop")
def retrain_loop(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Snapshot ground truth, train on it, gate, register, alias; returns the new version's account."""
    settings = settings_from(overrides)
    logger = get_run_logger()
    with training_lock(settings):  # re-entered when the `train` flow holds it already
        path, rows = snapshot(settings)
        logger.info("snapshot of %d approved rows: %s", rows, path)
        result = fit_gate_register(settings, path)
    where = result.aliases
    out = summary(result) | {"snapshot": str(path), "snapshot_rows": rows}
    logger.info("v%s (registry version %s): gate %s -> %s", result.semver, result.version,
                "passed" if result.gate.passed else "failed", result.lifecycle)
    create_markdown_artifact(
        f"**v{result.semver}** (registry version {result.version}) trained on `{path}` ({rows} rows): "
        f"gate **{'passed' if result.gate.passed else 'failed'}**, shadow replay **{out['shadow']['status']}** -> "
        f"**{result.lifecycle}**.\n\n"
        + "\n".join(f"- {r}" for r in result.gate.reasons + out["shadow"]["reasons"])
        + f"\n\n@production = {where['production']}, @staging = {where['staging']} "
          f"(canary share {where['canary_share']:.0%}). Report: `{out['report']}`.",
        key="intelrouter-retrain", description="Retrain: gate decision and aliases",
    )
    create_table_artifact([{"metric": k, "value": round(v, 4)} for k, v in out["metrics"].items()],
                          key="intelrouter-retrain-metrics", description=f"v{result.semver} metrics")
    return out


if __name__ == "__main__":
    retrain_loop()
