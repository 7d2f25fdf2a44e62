"""Label Studio sync (seed 004, every 6 h): push what needs review, then pull the answers."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import LABEL_STUDIO, settings_from
from intelrouter import review
from intelrouter.config import Settings


@task(cache_policy=NO_CACHE, **LABEL_STUDIO)
def push_tasks(settings: Settings, limit: int | None, project_id: int | None) -> review.PushResult:
    """Send needs-review queries as Label Studio tasks (only those not sent yet)."""
    return review.push(settings, limit, project_id)


@task(cache_policy=NO_CACHE, **LABEL_STUDIO)
def pull_answers(settings: Settings, limit: int | None, project_id: int | None) -> review.PullResult:
    """Store the answers given since the last pull as ground truth."""
    return review.pull(settings, limit, project_id)


@flow(name="labelstudio-sync")
def labelstudio_sync(limit: int | None = None, project_id: int | None = None,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Push queries that need review to Label Studio, then pull completed annotations into ml_data."""
    settings = settings_from(overrides)
    if not settings.label_studio_url:  # no Label Studio in this installation: a scheduled run has nothing to do
        reason = "skipped: Label Studio is not configured (set INTELROUTER_LABEL_STUDIO_URL)"
        get_run_logger().info(reason)
        return {"skipped": reason}
    pushed = push_tasks(settings, limit, project_id)
    pulled = pull_answers(settings, limit, project_id)
    get_run_logger().info("pushed %d tasks (%d adopted); pulled %d answers (%d approved, %d rejected, %d skipped)",
                          pushed.pushed, pushed.adopted, pulled.written, pulled.approved, pulled.rejected,
                          pulled.skipped)
    create_markdown_artifact(
        f"Project {pushed.project_id}: pushed **{pushed.pushed}** tasks ({pushed.adopted} adopted from an "
        f"interrupted push); pulled **{pulled.written}** answers: {pulled.approved} approved "
        f"({pulled.disagreements} disagreeing with the model), {pulled.rejected} rejected, {pulled.skipped} skipped.",
        key="intelrouter-labelstudio-sync", description="Label Studio sync",
    )
    return {"push": asdict(pushed), "pull": {**asdict(pulled), "written": pulled.written}}


if __name__ == "__main__":
    labelstudio_sync()
