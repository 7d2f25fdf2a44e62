"""Label Studio sync (seed 004, every 6 h): pull the answers given since the last sync, then push what needs review.

The flow is one library call, `intelrouter.review.sync` (pull first: see its docstring for why); every step of
it is safe to repeat, so a retry after Label Studio or the database failed sends nothing twice.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import LABEL_STUDIO, settings_from
from flows.events import ask_for_retrain
from intelrouter import review
from intelrouter.config import Settings


@task(cache_policy=NO_CACHE, **LABEL_STUDIO)
def sync_review(settings: Settings, limit: int | None, project_id: int | None) -> review.SyncResult:
    """Store the answers given since the last sync as ground truth, then send what waits for review."""
    return review.sync(settings, limit, project_id)


@flow(name="labelstudio-sync")
def labelstudio_sync(limit: int | None = None, project_id: int | None = None,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pull completed annotations into ml_data, then push queries that need review to Label Studio."""
    settings = settings_from(overrides)
    if not settings.label_studio_url:  # no Label Studio in this installation: a scheduled run has nothing to do
        reason = "skipped: Label Studio is not configured (set INTELROUTER_LABEL_STUDIO_URL)"
        get_run_logger().info(reason)
        return {"skipped": reason}
    result = sync_review(settings, limit, project_id)
    pulled, pushed = result.pull, result.push
    get_run_logger().info("pulled %d answers (%d approved, %d rejected, %d skipped); pushed %d tasks (%d adopted)",
                          pulled.written, pulled.approved, pulled.rejected, pulled.skipped, pushed.pushed,
                          pushed.adopted)
    create_markdown_artifact(
        f"Project {pushed.project_id}: pulled **{pulled.written}** answers: {pulled.approved} approved "
        f"({pulled.disagreements} disagreeing with the model), {pulled.rejected} rejected, {pulled.skipped} skipped; "
        f"pushed **{pushed.pushed}** tasks ({pushed.adopted} adopted from an interrupted push).",
        key="intelrouter-labelstudio-sync", description="Label Studio sync",
    )
    retrain = ask_for_retrain(settings, []) if pulled.written else None  # new human labels may call for one
    return {"push": asdict(pushed), "pull": {**asdict(pulled), "written": pulled.written}, "retrain": retrain}


if __name__ == "__main__":
    labelstudio_sync()
