"""Daily capture (seed 004, 02:00): triage what was captured, write the daily and monitoring reports, alert, and ask
for a retrain when drift is alerted or enough new human labels arrived (flows/events.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import DATABASE, settings_from
from flows.events import ask_for_retrain
from intelrouter import report as monitoring
from intelrouter.config import Settings
from intelrouter.store import parse_when
from intelrouter.triage import DailyReport, triage


@task(cache_policy=NO_CACHE, **DATABASE)
def triage_queries(settings: Settings, since: str | None, until: str | None) -> DailyReport:
    """Auto-approve trusted confident queries, queue the rest for review, write the daily report."""
    return triage(settings, parse_when(since, "since"), parse_when(until, "until"))


@task(cache_policy=NO_CACHE, **DATABASE)
def build_report(settings: Settings) -> monitoring.Report:
    """Collect the monitoring numbers (drift too) and write logs/monitoring-YYYY-MM-DD.json."""
    report = monitoring.add_drift(settings, monitoring.collect(settings))
    monitoring.write(settings, report)
    return report


@task(cache_policy=NO_CACHE)
def raise_alerts(settings: Settings, report: monitoring.Report) -> bool | None:
    """Log the alerts, publish them as an artifact, and POST them to the webhook when one is set."""
    if report.alerts:
        create_markdown_artifact(
            "\n".join(f"- **{a.kind}**: {a.message}" for a in report.alerts),
            key="intelrouter-alerts", description="IntelRouter alerts",
        )
    return monitoring.notify(settings, report)


def publish(report: monitoring.Report, daily: DailyReport | None = None) -> None:
    """The monitoring report as Prefect artifacts (markdown, and the per-day table)."""
    header = ""
    if daily is not None:
        header = (f"Triaged {daily.triaged} of {daily.captured} captured: {daily.auto_approved} auto-approved, "
                  f"{daily.needs_review} need review (report `{daily.report_path}`).\n\n")
    create_markdown_artifact(header + monitoring.to_markdown(report), key="intelrouter-monitoring",
                             description=f"Monitoring report ({report.path})")
    if report.days:
        create_table_artifact(report.days, key="intelrouter-daily-stats", description="Per-day numbers")


@flow(name="capture")
def capture(since: str | None = None, until: str | None = None,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Triage every query not yet triaged (optionally in [since, until)), then report and alert."""
    settings = settings_from(overrides)
    logger = get_run_logger()
    daily = triage_queries(settings, since, until)
    logger.info("triaged %d of %d captured: %d auto-approved, %d need review", daily.triaged, daily.captured,
                daily.auto_approved, daily.needs_review)
    report = build_report(settings)
    publish(report, daily)
    webhook = raise_alerts(settings, report)
    retrain = ask_for_retrain(settings, [a.kind for a in report.alerts])
    return {"daily": asdict(daily), "report": report.path, "alerts": [a.kind for a in report.alerts],
            "webhook": webhook, "retrain": retrain}


if __name__ == "__main__":
    capture()
