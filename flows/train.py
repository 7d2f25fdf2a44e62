"""Scheduled training: weekly (seed 004) when enough new approved samples wait, every 30 days regardless (seed 000),
and on events (drift, new human labels: the deployment trigger of flows/events.py passes force and its reason)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import DATABASE, settings_from
from flows.retrain_loop import retrain_loop
from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import InsufficientDataError
from intelrouter.triggers import should_train


@task(cache_policy=NO_CACHE, **DATABASE)
def count_waiting(settings: Settings) -> int:
    """Approved ground-truth rows no version has trained on yet."""
    with store.connect(settings) as conn:
        return store.samples_waiting(conn)


@flow(name="train")
def train(force: bool = False, overrides: dict[str, Any] | None = None, reason: str | None = None) -> dict[str, Any]:
    """Run the retrain loop when the weekly rule says so (or `force`); otherwise log a skip. `reason`: why an event
    started this run."""
    settings = settings_from(overrides)
    logger = get_run_logger()
    waiting = count_waiting(settings)
    if force and reason:  # started by a retrain event: its reasons say why
        go, reason = True, f"event: {reason}"
    else:
        go, reason = should_train(waiting, settings.weekly_trigger, force)
    if not go:
        logger.info(reason)
        create_markdown_artifact(f"Training {reason}.", key="intelrouter-train", description="Training skipped")
        return {"trained": False, "reason": reason, "waiting": waiting}
    logger.info("training: %s", reason)
    try:
        result = retrain_loop(overrides=overrides)
    except InsufficientDataError as exc:  # a scheduled run on a young installation: a skip, not a failure
        logger.warning("skipped: %s", exc)
        create_markdown_artifact(f"Training skipped: {exc}.", key="intelrouter-train", description="Training skipped")
        return {"trained": False, "reason": f"skipped: {exc}", "waiting": waiting}
    return {"trained": True, "reason": reason, "waiting": waiting, **result}


if __name__ == "__main__":
    train()
