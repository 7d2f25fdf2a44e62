"""Monitoring (seed 004): the loop's numbers per day and per model version, and the alerts they raise.

Beside the labelled numbers, `intelrouter.watch` adds what needs no labels: estimated accuracy per day and per
version (`collect`), calibration against the labels, and drift of @production's traffic (`add_drift`, which
loads the production model and so runs in `run_report` and the capture flow, not on every dashboard refresh).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, case, func, select

from intelrouter import store, watch
from intelrouter.config import Settings, secret
from intelrouter.errors import first_line
from intelrouter.jsonfiles import write_report
from intelrouter.names import HUMAN_SOURCES, PRODUCTION
from intelrouter.outcomes import add_caller_fallback, caller_outcomes, rate
from intelrouter.trust import provider_trust

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One checklist item that fired: what, the measured value, and the limit it crossed."""

    kind: str  # online_accuracy | uncertain_rate | samples_waiting | provider_precision | calibration_drift | ...
    message: str
    value: float
    limit: float


@dataclass
class Report:
    """The monitoring report over a window of days (written to logs/monitoring-YYYY-MM-DD.json)."""

    generated_at: str
    since: str
    until: str
    days: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    production: dict[str, Any]
    review_backlog: int
    samples_waiting: int
    alerts: list[Alert] = field(default_factory=list)
    path: str = ""
    providers: list[dict[str, Any]] = field(default_factory=list)  # each trusted provider's measured precision
    estimates: list[dict[str, Any]] = field(default_factory=list)  # per day and version: estimated vs labelled
    drift: dict[str, Any] | None = None  # @production's traffic against its training data (add_drift)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return asdict(self)


_rate = rate  # part / whole to 4 places, None without a whole


def _per_day(conn: Connection, since: datetime, until: datetime) -> list[dict[str, Any]]:
    q, m = store.queries, store.ml_data
    day = func.date(q.c.created_at)
    in_window = (q.c.created_at >= since, q.c.created_at < until)
    flag = lambda cond: func.coalesce(func.sum(case((cond, 1), else_=0)), 0)  # noqa: E731
    captured = {
        str(r.day): r
        for r in conn.execute(
            select(
                day.label("day"),
                func.count().label("captured"),
                flag(q.c.review_status != store.PENDING).label("triaged"),
                flag(q.c.review_status == store.AUTO_APPROVED).label("auto_approved"),
                flag(q.c.review_status == store.NEEDS_REVIEW).label("needs_review"),
                flag(q.c.uncertain).label("uncertain"),
            ).where(*in_window).group_by(day)
        )
    }
    labelled = {
        str(r.day): r
        for r in conn.execute(
            select(day.label("day"), func.count().label("labelled"),
                   flag(q.c.top_label == m.c.label).label("correct"))
            .select_from(q.join(m, m.c.query_id == q.c.id))
            .where(*in_window, m.c.source.in_(HUMAN_SOURCES)).group_by(day)
        )
    }
    mday = func.date(m.c.created_at)
    waiting = dict(
        conn.execute(
            select(mday, func.count())
            .where(m.c.created_at >= since, m.c.created_at < until, m.c.trained_version.is_(None))
            .group_by(mday)
        ).all()
    )
    waiting = {str(k): int(v) for k, v in waiting.items()}
    rows = []
    for d in sorted(set(captured) | set(labelled) | set(waiting)):
        c, lab = captured.get(d), labelled.get(d)
        n, n_lab = (int(c.captured) if c else 0), (int(lab.labelled) if lab else 0)
        rows.append({
            "day": d,
            "captured": n,
            "auto_approved": int(c.auto_approved) if c else 0,
            "auto_approval_rate": _rate(int(c.auto_approved), int(c.triaged)) if c else None,
            "uncertain_rate": _rate(int(c.uncertain), n) if c else None,
            "labelled": n_lab,
            "online_accuracy": _rate(int(lab.correct), n_lab) if lab else None,
            "needs_review": int(c.needs_review) if c else 0,
            "new_samples_waiting": waiting.get(d, 0),
        })
    return rows


def _per_version(conn: Connection, since: datetime, until: datetime) -> list[dict[str, Any]]:
    q, m = store.queries, store.ml_data
    in_window = (q.c.created_at >= since, q.c.created_at < until)
    flag = lambda cond: func.coalesce(func.sum(case((cond, 1), else_=0)), 0)  # noqa: E731
    keys = (q.c.model_version, q.c.variant)
    served = conn.execute(
        select(*keys, func.count().label("captured"), flag(q.c.uncertain).label("uncertain"),
               flag(q.c.review_status == store.AUTO_APPROVED).label("auto_approved"),
               flag(q.c.review_status != store.PENDING).label("triaged"))
        .where(*in_window).group_by(*keys)
    ).all()
    judged = {
        (r.model_version, r.variant): r
        for r in conn.execute(
            select(*keys, func.count().label("labelled"), flag(q.c.top_label == m.c.label).label("correct"))
            .select_from(q.join(m, m.c.query_id == q.c.id))
            .where(*in_window, m.c.source.in_(HUMAN_SOURCES)).group_by(*keys)
        )
    }
    rows = []
    for r in sorted(served, key=lambda r: (str(r.model_version or ""), str(r.variant or ""))):
        lab = judged.get((r.model_version, r.variant))
        n_lab = int(lab.labelled) if lab else 0
        rows.append({
            "model_version": r.model_version,
            "variant": r.variant,
            "captured": int(r.captured),
            "auto_approval_rate": _rate(int(r.auto_approved), int(r.triaged)),
            "uncertain": int(r.uncertain),
            "uncertain_rate": _rate(int(r.uncertain), int(r.captured)),
            "labelled": n_lab,
            "correct": int(lab.correct) if lab else 0,
            "online_accuracy": _rate(int(lab.correct), n_lab) if lab else None,
        })
    return rows


def _production(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """Production traffic over the window: what users of the @production variant experienced."""
    prod = [v for v in versions if v["variant"] == PRODUCTION]
    captured = sum(v["captured"] for v in prod)
    uncertain = sum(v["uncertain"] for v in prod)
    labelled = sum(v["labelled"] for v in prod)
    correct = sum(v["correct"] for v in prod)
    return {
        "versions": sorted({str(v["model_version"]) for v in prod}),
        "captured": captured,
        "uncertain_rate": _rate(uncertain, captured),
        "labelled": labelled,
        "online_accuracy": _rate(correct, labelled),
    }


def check_alerts(production: dict[str, Any], samples_waiting: int, settings: Settings) -> list[Alert]:
    """Seed 004's checklist: low production accuracy, too many fallbacks, too many samples waiting."""
    alerts = []
    enough = settings.alert_min_samples
    acc = production.get("online_accuracy")
    if acc is not None and production.get("labelled", 0) >= enough and acc < settings.online_accuracy_floor:
        alerts.append(Alert(
            "online_accuracy",
            f"production online accuracy {acc:.1%} on {production['labelled']} feedback labels is below the "
            f"floor {settings.online_accuracy_floor:.0%}",
            acc, settings.online_accuracy_floor,
        ))
    rate = production.get("uncertain_rate")
    if rate is not None and production.get("captured", 0) >= enough and rate > settings.uncertain_rate_ceiling:
        alerts.append(Alert(
            "uncertain_rate",
            f"uncertain (fallback) rate {rate:.1%} of {production['captured']} production queries is above the "
            f"ceiling {settings.uncertain_rate_ceiling:.0%}",
            rate, settings.uncertain_rate_ceiling,
        ))
    if samples_waiting >= settings.alert_waiting:
        alerts.append(Alert(
            "samples_waiting",
            f"{samples_waiting} labelled samples are waiting for training (alert at {settings.alert_waiting}): "
            "run `intelrouter train`",
            float(samples_waiting), float(settings.alert_waiting),
        ))
    return alerts


def collect(settings: Settings, days: int | None = None, now: datetime | None = None) -> Report:
    """Read the report's numbers from the store for the last `days` days (today included)."""
    days = days or settings.report_days
    now = now or store.utcnow()
    since = datetime(now.year, now.month, now.day) - timedelta(days=days - 1)
    until = now + timedelta(microseconds=1)
    with store.connect(settings) as conn:
        per_day = _per_day(conn, since, until)
        versions = _per_version(conn, since, until)
        by_version_day = watch.estimates(conn, since, until)
        backlog = store.count(conn, "SELECT COUNT(*) FROM queries WHERE review_status = :s", s=store.NEEDS_REVIEW)
        waiting = store.samples_waiting(conn)
        outcomes = caller_outcomes(conn, since, until, settings)
        providers = provider_rows(conn, settings)
    production = _production(versions)
    watch.add_estimates(by_version_day, per_day, versions)
    add_caller_fallback(per_day, versions, production, outcomes)
    return Report(
        generated_at=now.isoformat(timespec="seconds"),
        since=since.isoformat(timespec="seconds"),
        until=now.isoformat(timespec="seconds"),
        days=per_day,
        versions=versions,
        production=production,
        review_backlog=backlog,
        samples_waiting=waiting,
        alerts=check_alerts(production, waiting, settings) + provider_alerts(providers, settings)
        + [Alert(**a) for a in watch.calibration_alerts(by_version_day, settings)],
        providers=providers,
        estimates=watch.public_rows(by_version_day),
    )


def add_drift(settings: Settings, report: Report) -> Report:
    """Measure drift of @production's traffic in the report's window against its training data (loads the model);
    the section goes to `report.drift`, its alerts to `report.alerts`."""
    section, alerts = watch.drift_section(settings, datetime.fromisoformat(report.since),
                                          datetime.fromisoformat(report.until) + timedelta(seconds=1))
    report.drift = section
    report.alerts += [Alert(**a) for a in alerts]
    return report


def notify(settings: Settings, report: Report) -> bool | None:
    """Log each alert as a warning and POST them as JSON to the webhook; True when the webhook took them.

    None when there is nothing to send or no webhook is set; a webhook failure is logged, never raised:
    monitoring must not break the flow that runs it.
    """
    for alert in report.alerts:
        log.warning("ALERT %s: %s", alert.kind, alert.message)
    url = secret(settings.alert_webhook_url)
    if not report.alerts or not url:
        return None
    import httpx

    payload = {
        "source": "intelrouter",
        "generated_at": report.generated_at,
        "alerts": [asdict(a) for a in report.alerts],
        "production": report.production,
        "review_backlog": report.review_backlog,
        "samples_waiting": report.samples_waiting,
        "report": report.path,
    }
    try:
        with _unlogged(url):
            response = httpx.post(url, json=payload, timeout=10)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:  # its message quotes the URL, which is a secret (it often holds a token)
        log.warning("alert webhook failed: HTTP %d", exc.response.status_code)
        return False
    except httpx.HTTPError as exc:
        log.warning("alert webhook failed: %s: %s", type(exc).__name__, first_line(exc).replace(url, "<webhook>"))
        return False
    return True


class _DropMentions(logging.Filter):
    """Drops log records that mention a secret (httpx logs every request's URL at INFO)."""

    def __init__(self, secret_text: str) -> None:
        super().__init__()
        self.secret_text = secret_text

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless its message names the secret."""
        return self.secret_text not in record.getMessage()


@contextmanager
def _unlogged(url: str) -> Iterator[None]:
    """While posting to the webhook, httpx's own request log lines (they carry the URL) are dropped."""
    logger, drop = logging.getLogger("httpx"), _DropMentions(url)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def write(settings: Settings, report: Report) -> Path:
    """Write the report JSON under logs/ (one file per day, the latest run wins), then refresh the registry's mirror
    (model_versions' production accuracy and fallback rate follow the traffic: the daily report is their refresh)."""
    path = write_report(settings, f"monitoring-{report.generated_at[:10]}.json", report.as_dict())
    report.path = str(path)
    from intelrouter import registry_mirror  # imports the registry client: only a written report needs it

    registry_mirror.refresh(settings)
    return path


def run_report(settings: Settings, days: int | None = None, now: datetime | None = None) -> Report:
    """Collect, write and alert: what `intelrouter report` and the daily capture flow do."""
    report = add_drift(settings, collect(settings, days, now))
    write(settings, report)
    notify(settings, report)
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1%}"
    return str(value)


def to_markdown(report: Report) -> str:
    """The report as markdown (the Prefect artifact and `intelrouter report --markdown`)."""
    lines = [f"# IntelRouter monitoring, {report.since[:10]} to {report.until[:10]}", ""]
    if report.alerts:
        lines += ["## Alerts", ""] + [f"- **{a.kind}**: {a.message}" for a in report.alerts] + [""]
    else:
        lines += ["No alerts.", ""]
    p = report.production
    lines += [
        f"Production ({', '.join(p['versions']) or 'no traffic'}): {p['captured']} queries, uncertain rate "
        f"{_fmt(p['uncertain_rate'])}, online accuracy {_fmt(p['online_accuracy'])} on {p['labelled']} labels. "
        f"Review backlog {report.review_backlog}; samples waiting for training {report.samples_waiting}.",
        "",
        "## Per day",
        "",
        "| day | captured | auto-approval | uncertain | labelled | online accuracy | needs review | new waiting |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {d['day']} | {d['captured']} | {_fmt(d['auto_approval_rate'])} | {_fmt(d['uncertain_rate'])} | "
        f"{d['labelled']} | {_fmt(d['online_accuracy'])} | {d['needs_review']} | {d['new_samples_waiting']} |"
        for d in report.days
    ]
    lines += [
        "",
        "## Per model version",
        "",
        "| version | variant | captured | auto-approval | uncertain | labelled | online accuracy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {_fmt(v['model_version'])} | {_fmt(v['variant'])} | {v['captured']} | {_fmt(v['auto_approval_rate'])} | "
        f"{_fmt(v['uncertain_rate'])} | {v['labelled']} | {_fmt(v['online_accuracy'])} |"
        for v in report.versions
    ]
    lines += caller_markdown(report) + providers_markdown(report.providers)
    lines += watch.markdown(report.estimates, report.drift)
    return "\n".join(lines) + "\n"


def caller_markdown(report: Report) -> list[str]:
    """The markdown section on the callers' reported outcomes (POST /outcome)."""
    lines = ["", "## Caller-reported outcomes", ""]
    if not any(d.get("outcomes_reported") for d in report.days):
        return [*lines, "No caller reported what it did with an answer in this window (`POST /outcome`)."]
    lines += ["| day | outcomes reported | caller fallback rate | uncertain rate |", "|---|---:|---:|---:|"]
    lines += [f"| {d['day']} | {d['outcomes_reported']} | {_fmt(d['caller_fallback_rate'])} | "
              f"{_fmt(d['uncertain_rate'])} |" for d in report.days]
    lines += ["", "| version | variant | outcomes reported | caller fallback rate | uncertain rate |",
              "|---|---|---:|---:|---:|"]
    lines += [f"| {_fmt(v['model_version'])} | {_fmt(v['variant'])} | {v['outcomes_reported']} | "
              f"{_fmt(v['caller_fallback_rate'])} | {_fmt(v['uncertain_rate'])} |" for v in report.versions]
    return lines


# --- trusted providers (issue 16): precision measured by audits -------------------------------------------------


def provider_rows(conn: Connection, settings: Settings) -> list[dict[str, Any]]:
    """Each trusted provider's audited precision with its Wilson 95 % interval, and whether it is paused."""
    return [t.as_dict() for t in provider_trust(conn, settings)]


def provider_alerts(providers: list[dict[str, Any]], settings: Settings) -> list[Alert]:
    """`provider_precision`: a trusted provider's auto-approval is paused (its lower bound is below the floor)."""
    floor = settings.provider_precision_floor
    return [
        Alert(
            "provider_precision",
            f"auto-approval from {p['provider']} is paused: precision {p['precision']:.1%} on its {p['audited']} "
            f"newest audited answers (95% interval {p['low']:.1%}-{p['high']:.1%}), lower bound below the floor "
            f"{floor:.0%}; its confident answers go to review until audits bring the bound back",
            p["low"], floor,
        )
        for p in providers if p["paused"]
    ]


def providers_markdown(providers: list[dict[str, Any]]) -> list[str]:
    """The providers table of the markdown report (nothing when no provider is trusted or audited)."""
    if not providers:
        return []
    lines = ["", "## Trusted providers (audited precision)", "",
             "| provider | audited | confirmed | precision | 95% interval | waiting | auto-approval |",
             "|---|---:|---:|---:|---|---:|---|"]
    for p in providers:
        interval = f"{p['low']:.1%}–{p['high']:.1%}" if p["low"] is not None else "–"
        state = "paused" if p["paused"] else "on" if p["trusted"] else "not trusted"
        lines.append(f"| {p['provider']} | {p['audited']} | {p['confirmed']} | {_fmt(p['precision'])} | {interval} | "
                     f"{p['waiting']} | {state} |")
    return lines
