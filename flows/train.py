"""Scheduled training: weekly (seed 004) when enough new approved samples wait, every 30 days regardless (seed 000),
and on events (drift, new human labels: the deployment trigger of flows/events.py passes force and its reason)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import DATABASE, TRACKING, settings_from
from flows.retrain_loop import retrain_loop
from intelrouter import recovery, store
from intelrouter.config import Settings
from intelrouter.errors import InsufficientDataError
from intelrouter.locks import LockBusyError, training_lock
from intelrouter.triggers import should_train


@task(cache_policy=NO_CACHE, **DATABASE)
def count_waiting(settings: Settings) -> int:
    """Approved ground-truth rows no version has trained on yet."""
    with store.connect(settings) as conn:
        return store.samples_waiting(conn)


@task(cache_policy=NO_CACHE, **TRACKING)
def recover(settings: Settings) -> list[str]:
    """Finish what a crashed training or move left half done, release the rows of versions that will never serve."""
    done = recovery.recover(settings)
    return [*done.moves, *(f"rejected interrupted version {v}" for v in done.rejected),
            *(f"released {n} rows of v{v}" for v, n in done.released.items())]


@flow(name="train")
def train(force: bool = False, overrides: dict[str, Any] | None = None, reason: str | None = None) -> dict[str, Any]:
    """Run the retrain loop when the weekly rule says so (or `force`); otherwise log a skip. `reason`: why an event
    started this run.

    The rule is read inside the lifecycle lock: when the weekly and the 30-day runs start together, one trains and
    the other waits (INTELROUTER_TRAINING_LOCK_WAIT_SECONDS) and re-reads the rule, or skips."""
    settings = settings_from(overrides)
    logger = get_run_logger()
    waiting: int | None = None
    try:
        with training_lock(settings):
            for line in recover(settings):
                logger.warning("recovered: %s", line)
            waiting = count_waiting(settings)
            if force and reason:  # started by a retrain event: its reasons say why
                go, reason = True, f"event: {reason}"
            else:
                go, reason = should_train(waiting, settings.weekly_trigger, force)
            if not go:
                logger.info(reason)
                create_markdown_artifact(f"Training {reason}.", key="intelrouter-train",
                                         description="Training skipped")
                return {"trained": False, "reason": reason, "waiting": waiting}
            logger.info("training: %s", reason)
            result = retrain_loop(overrides=overrides)
    except (InsufficientDataError, LockBusyError) as exc:  # a young installation, or another training: a skip
        logger.warning("skipped: %s", exc)
        create_markdown_artifact(f"Training skipped: {exc}.", key="intelrouter-train", description="Training skipped")
        return {"trained": False, "reason": f"skipped: {exc}", "waiting": waiting}
    return {"trained": True, "reason": reason, "waiting": waiting, **result}


if __name__ == "__main__":
    train()
