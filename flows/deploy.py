"""Scheduled deployments: `python -m flows.deploy` (or `intelrouter deploy`) serves every flow on its schedule.

Cron schedules need a real Prefect server (`prefect server start`, then PREFECT_API_URL). Schedules are
kept active when this process stops (`pause_on_shutdown=False`): runs keep being scheduled while it
restarts, and a restarted process picks them up. prefect.yaml holds the same deployments for work pools.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from intelrouter.config import Settings, load_settings
from intelrouter.errors import ConfigError

# seed 000 retrains every 30 days; the anchor is a Sunday 03:00 so it lines up with the weekly run
RETRAIN_ANCHOR = datetime(2025, 1, 5, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule of a deployment: a cron line or an interval, with its own parameters."""

    slug: str
    cron: str | None = None
    every: timedelta | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: the flow (module:function), its schedules and what it is for."""

    name: str
    entrypoint: str  # module:function
    description: str
    schedules: tuple[ScheduleSpec, ...] = ()
    on_retrain_events: bool = False  # also run on the retrain event (flows/events.py), at most once per cool-down


def specs(settings: Settings) -> list[DeploymentSpec]:
    """The schedule table (DESIGN.md "Flows and schedules"); prefect.yaml mirrors it."""
    return [
        DeploymentSpec("capture", "flows.capture:capture", "Triage, daily report, monitoring and alerts.",
                       (ScheduleSpec("capture-daily", cron="0 2 * * *"),)),
        DeploymentSpec("labelstudio-sync", "flows.labelstudio_sync:labelstudio_sync",
                       "Push queries that need review to Label Studio, pull the answers.",
                       (ScheduleSpec("labelstudio-sync-6h", cron="0 */6 * * *"),)),
        DeploymentSpec("train", "flows.train:train",
                       f"Weekly when >= {settings.weekly_trigger} approved samples are unused; every "
                       f"{settings.retrain_days} days regardless.",
                       (ScheduleSpec("train-weekly", cron="0 3 * * 0", parameters={"force": False}),
                        ScheduleSpec("train-every-30-days", every=timedelta(days=settings.retrain_days),
                                     parameters={"force": True})), on_retrain_events=True),
        DeploymentSpec("canary-check", "flows.canary_check:canary_check",
                       "Promote, step up, roll back or keep waiting on the @staging canary.",
                       (ScheduleSpec("canary-check-hourly", cron="0 * * * *"),)),
        DeploymentSpec("retrain-loop", "flows.retrain_loop:retrain_loop",
                       "Export, train, gate, register, alias (on demand)."),
        DeploymentSpec("export", "flows.export:export", "Approved ground truth as a JSONL snapshot (on demand)."),
    ]


def timezone(settings: Settings) -> str:
    """The schedules' time zone, checked."""
    try:
        ZoneInfo(settings.schedule_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"bad value for INTELROUTER_SCHEDULE_TIMEZONE: unknown time zone "
                          f"{settings.schedule_timezone!r} (use an IANA name such as UTC or Europe/Paris)") from None
    return settings.schedule_timezone


def load_flow(entrypoint: str) -> Any:
    """Import a flow object from `module:function`."""
    import importlib

    module, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(module), name)


def to_schedules(spec: DeploymentSpec, tz: str) -> list[Any]:
    """Prefect schedule objects for one deployment."""
    from prefect.schedules import Cron, Interval

    out = []
    for s in spec.schedules:
        if s.cron:
            out.append(Cron(s.cron, timezone=tz, parameters=s.parameters, slug=s.slug))
        else:
            out.append(Interval(s.every, anchor_date=RETRAIN_ANCHOR, timezone=tz, parameters=s.parameters,
                                slug=s.slug))
    return out


def deployments(settings: Settings) -> list[Any]:
    """Runner deployments for every spec (with the retrain trigger where asked), loaded by module path so any
    working directory serves them."""
    from prefect.deployments.runner import EntrypointType

    from flows.events import retrain_trigger

    tz = timezone(settings)
    return [
        load_flow(spec.entrypoint).to_deployment(
            spec.name, schedules=to_schedules(spec, tz), description=spec.description, tags=["intelrouter"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            triggers=[retrain_trigger(settings)] if spec.on_retrain_events else None,
        )
        for spec in specs(settings)
    ]


def api_url() -> str:
    """The Prefect server this process talks to; ConfigError when none is set or it does not answer."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError("cron schedules need a Prefect server: run `prefect server start` and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api (or pass --api-url)")
    try:
        httpx.get(url.rstrip("/") + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(f"Prefect server {url} does not answer ({type(exc).__name__}): start it with "
                          "`prefect server start` or fix PREFECT_API_URL") from None
    return url


def serve_all(settings: Settings, limit: int | None = None) -> None:
    """Register every deployment with its schedules and run their flows as they come due (blocks)."""
    from prefect import serve

    timezone(settings)  # a bad setting is reported before anything is contacted
    url = api_url()
    items = deployments(settings)
    print(f"serving {len(items)} deployments against {url}; schedules stay active when this process stops")
    serve(*items, pause_on_shutdown=False, limit=limit)


def main() -> None:
    """`python -m flows.deploy`: errors print one line and exit 1."""
    from flows.common import prefect_env
    from intelrouter.errors import IntelRouterError

    try:
        prefect_env()
        serve_all(load_settings())
    except IntelRouterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
