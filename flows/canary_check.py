"""Canary check (hourly): compare @staging with @production on feedback; promote, raise, roll back or wait."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import TRACKING, settings_from
from intelrouter import canary
from intelrouter.config import Settings
from intelrouter.store import utcnow


@task(cache_policy=NO_CACHE, **TRACKING)
def read_state(settings: Settings) -> canary.CanaryState:
    """Aliases and share from the registry, feedback counts per variant from the store."""
    return canary.read_state(settings)


@task(cache_policy=NO_CACHE, **TRACKING)
def apply_decision(settings: Settings, state: canary.CanaryState, decision: canary.Decision) -> bool:
    """Carry the decision out in the registry (promote, raise the share, or roll back)."""
    return canary.apply(settings, state, decision)


@flow(name="canary-check")
def canary_check(dry_run: bool = False, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One canary check; the decision goes to logs/canary-*.json and a Prefect artifact."""
    settings = settings_from(overrides)
    state = read_state(settings)
    decision = canary.decide_for(settings, state)
    applied = False if dry_run else apply_decision(settings, state, decision)
    report = canary.record(settings, state, decision, applied, utcnow())
    get_run_logger().info("canary: %s: %s", decision.action, decision.reason)
    if decision.action != "none":
        create_markdown_artifact(
            f"**{decision.action}**{'' if applied else ' (not applied)'}: {decision.reason}\n\n"
            f"Log: `{report.path}`. Undo a promotion with `intelrouter rollback`.",
            key="intelrouter-canary", description="Canary decision",
        )
    return {"decision": asdict(decision), "applied": applied, "path": report.path}


if __name__ == "__main__":
    canary_check()
