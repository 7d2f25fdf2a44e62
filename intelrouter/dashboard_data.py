"""What the dashboard shows, read from the library only: the monitoring report, the registry and the logs.

`collect(settings, days, now)` returns plain JSON-ready data (the shape below). A part that cannot be read (a
registry that is down, a store that is unreachable) becomes one line in `errors` and empty values, never an
exception: the page then says what is missing.

    {"generated_at", "since", "until": ISO times, "days": int, "model_name": str,
     "errors": [str],                                      # parts that could not be read
     "report": report.Report.as_dict() | None,             # per-day rows (`days`), per-version rows, alerts, ...
     "by_version_day": [{"day", "model_version", "variant", "captured", "uncertain_rate", "labelled",
                         "online_accuracy", "outcomes_reported", "caller_fallback_rate"}],
     "aliases": {"production": VERSION | None, "staging": VERSION | None},
     "canary_share": float | None,                         # only while something carries @staging
     "canary": [{"time", "action", "share", "share_before", "reason", "applied", "version"}],
     "training": [VERSION],                                # every registered/trained version, oldest first
     "history": [{"time", "review_backlog", "samples_waiting"}],  # logs/monitoring-*.json in the window, and now
     "review_backlog": int | None, "samples_waiting": int | None,
     "alerts": [{"kind", "message", "value", "limit"}]}
    VERSION = {"version", "semver", "lifecycle", "created", "test_accuracy", "test_macro_f1", "recent_accuracy",
               "threshold", "gate": "passed" | "failed" | "unknown", "reasons": [str]}

Per-day report rows carry `caller_fallback_rate` (None until a caller reports outcomes, POST /outcome) and may carry
`estimated_accuracy` once it is measured; the dashboard draws them when present.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, func, select

from intelrouter import report as monitoring
from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError
from intelrouter.outcomes import fallback_routes, rate, reported

log = logging.getLogger(__name__)

METRIC_TAGS = ("test_accuracy", "test_macro_f1", "recent_accuracy", "threshold")


def _number(value: Any) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _failure(what: str, exc: BaseException) -> str:
    """One line for the page; an unexpected error also goes to the log with its traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, IntelRouterError):
        log.warning("dashboard: could not read the %s", what, exc_info=exc)
    return f"{what}: {text[:300]}"


def per_version_day(conn: Connection, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Per day and per (model version, variant): queries, uncertain (fallback) rate, human labels, online accuracy."""
    q, m = store.queries, store.ml_data
    day = func.date(q.c.created_at)
    keys = (day.label("day"), q.c.model_version, q.c.variant)
    in_window = (q.c.created_at >= since, q.c.created_at < until)
    flag = lambda cond: func.coalesce(func.sum(case((cond, 1), else_=0)), 0)  # noqa: E731
    served = conn.execute(
        select(*keys, func.count().label("captured"), flag(q.c.uncertain).label("uncertain"))
        .where(*in_window).group_by(*keys)
    ).all()
    judged = {
        (str(r.day), r.model_version, r.variant): r
        for r in conn.execute(
            select(*keys, func.count().label("labelled"), flag(q.c.top_label == m.c.label).label("correct"))
            .select_from(q.join(m, m.c.query_id == q.c.id))
            .where(*in_window, m.c.source.in_(monitoring.HUMAN_SOURCES)).group_by(*keys)
        )
    }
    rows = []
    for r in sorted(served, key=lambda r: (str(r.day), str(r.model_version or ""), str(r.variant or ""))):
        lab = judged.get((str(r.day), r.model_version, r.variant))
        n_lab = int(lab.labelled) if lab else 0
        rows.append({
            "day": str(r.day), "model_version": r.model_version, "variant": r.variant, "captured": int(r.captured),
            "uncertain_rate": round(int(r.uncertain) / int(r.captured), 4) if r.captured else None,
            "labelled": n_lab, "online_accuracy": round(int(lab.correct) / n_lab, 4) if n_lab else None,
        })
    return rows


def add_caller_rates(conn: Connection, rows: list[dict[str, Any]], since: datetime, until: datetime,
                     settings: Settings) -> None:
    """Add the caller-reported fallback rate (None where no caller reported an outcome) to per_version_day's rows."""
    counts = reported(conn, since, until, fallback_routes(settings), "day", "model_version", "variant")
    for row in rows:
        key = (row["day"], None if row["model_version"] is None else str(row["model_version"]), row["variant"])
        n, fallback = counts.get(key, (0, 0))
        row["outcomes_reported"], row["caller_fallback_rate"] = n, rate(fallback, n)


def _version_row(mv: Any) -> dict[str, Any]:
    tags = dict(mv.tags or {})
    stamp = mv.creation_timestamp
    created = datetime.fromtimestamp(stamp / 1000, UTC).replace(tzinfo=None) if stamp else None
    reasons = [r.strip() for r in tags.get("gate_reasons", "").split(";") if r.strip()]
    if tags.get("rejected_reason") and not reasons:
        reasons = [tags["rejected_reason"]]
    return {
        "version": str(mv.version), "semver": tags.get("semver", ""), "lifecycle": tags.get("lifecycle", ""),
        "created": created.isoformat(timespec="seconds") if created else None,
        **{k: _number(tags.get(k)) for k in METRIC_TAGS},
        "gate": tags.get("gate") or "unknown", "reasons": reasons,
    }


def _training_logs(settings: Settings) -> dict[str, dict[str, Any]]:
    """logs/training-router-v*.json by registry version (they hold the gate reasons as a list)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(settings.logs_dir.glob("training-router-v*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if doc.get("model_name", settings.model_name) != settings.model_name or doc.get("version") is None:
            continue
        test = (doc.get("metrics") or {}).get("test", {})
        gate = doc.get("gate") or {}
        found[str(doc["version"])] = {
            "version": str(doc["version"]), "semver": doc.get("semver", ""), "lifecycle": doc.get("lifecycle", ""),
            "created": str(doc.get("created_at", ""))[:19] or None,
            "test_accuracy": _number(test.get("accuracy")), "test_macro_f1": _number(test.get("macro_f1")),
            "recent_accuracy": _number(((doc.get("metrics") or {}).get("recent") or {}).get("accuracy")),
            "threshold": _number(doc.get("threshold")),
            "gate": "passed" if gate.get("passed") else "failed" if "passed" in gate else "unknown",
            "reasons": [str(r) for r in gate.get("reasons") or []],
        }
    return found


def _registry(settings: Settings, data: dict[str, Any]) -> None:
    """Aliases, canary share and the training history (registry tags, completed by the training logs)."""
    history = _training_logs(settings)
    try:
        from intelrouter import registry

        versions = {str(mv.version): _version_row(mv) for mv in registry.list_model_versions(settings)}
        aliases = {a: registry.alias_version(settings, a) for a in registry.ALIASES}
        share = registry.canary_share(settings) if aliases["staging"] is not None else None
    except Exception as exc:  # noqa: BLE001 - the page says the registry is down, and shows what the logs know
        data["errors"].append(_failure("model registry", exc))
        versions, aliases, share = {}, {}, None
    for key, row in versions.items():
        logged = history.get(key, {})
        history[key] = {**logged, **{k: v for k, v in row.items() if v not in (None, "", [], "unknown")}}
        if logged.get("reasons"):  # the log keeps each reason whole (the tag joins them with "; ")
            history[key]["reasons"] = logged["reasons"]
    for row in history.values():
        row.setdefault("gate", "unknown")
        row.setdefault("reasons", [])
        for k in (*METRIC_TAGS, "created"):
            row.setdefault(k, None)
    data["training"] = sorted(history.values(), key=lambda r: (r.get("created") or "", int(r["version"])
                                                               if r["version"].isdigit() else 0))
    data["aliases"] = {a: history.get(str(mv.version)) if (mv := aliases.get(a)) is not None else None
                       for a in ("production", "staging")}
    data["canary_share"] = share


def _canary_logs(settings: Settings, since: datetime) -> list[dict[str, Any]]:
    """Canary decisions from logs/canary-<time>-<action>.json in the window, oldest first."""
    first = since.strftime("%Y%m%dT%H%M%S")
    rows = []
    for path in sorted(settings.logs_dir.glob("canary-*.json")):
        if path.name[len("canary-"):][:15] < first:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            state, decision = doc.get("state") or {}, doc.get("decision") or {}
            before = _number(state.get("share"))
            raised = decision.get("action") == "raise" and doc.get("applied") and decision.get("share") is not None
            rows.append({
                "time": str(doc["checked_at"]), "action": str(decision.get("action", "")),
                "share": _number(decision["share"]) if raised else before, "share_before": before,
                "reason": str(decision.get("reason", "")), "applied": bool(doc.get("applied")),
                "version": (state.get("staging") or {}).get("version"),
            })
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return sorted(rows, key=lambda r: r["time"])


def _monitoring_logs(settings: Settings, since: datetime) -> list[dict[str, Any]]:
    """Review backlog and samples waiting as each logs/monitoring-YYYY-MM-DD.json in the window saw them."""
    rows = []
    for path in sorted(settings.logs_dir.glob("monitoring-*.json")):
        if path.stem[len("monitoring-"):] < since.date().isoformat():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            rows.append({"time": str(doc["generated_at"]), "review_backlog": int(doc["review_backlog"]),
                         "samples_waiting": int(doc["samples_waiting"])})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return rows


def collect(settings: Settings, days: int | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard draws, for the last `days` days (today included); never raises for missing parts."""
    days = days or settings.report_days
    now = now or store.utcnow()
    since = datetime(now.year, now.month, now.day) - timedelta(days=days - 1)
    data: dict[str, Any] = {
        "generated_at": now.isoformat(timespec="seconds"), "since": since.isoformat(timespec="seconds"),
        "until": now.isoformat(timespec="seconds"), "days": days, "model_name": settings.model_name, "errors": [],
        "report": None, "by_version_day": [], "review_backlog": None, "samples_waiting": None, "alerts": [],
    }
    try:
        rep = monitoring.collect(settings, days, now).as_dict()
        with store.connect(settings) as conn:
            data["by_version_day"] = per_version_day(conn, since, now + timedelta(microseconds=1))
            add_caller_rates(conn, data["by_version_day"], since, now + timedelta(microseconds=1), settings)
        data.update(report=rep, review_backlog=rep["review_backlog"], samples_waiting=rep["samples_waiting"],
                    alerts=rep["alerts"])
    except Exception as exc:  # noqa: BLE001 - an unreachable store is an empty-state page, not a 500
        data["errors"].append(_failure("store", exc))
    _registry(settings, data)
    logs_ok = settings.logs_dir.is_dir()
    data["canary"] = _canary_logs(settings, since) if logs_ok else []
    history = _monitoring_logs(settings, since) if logs_ok else []
    if data["report"] is not None:
        history.append({"time": data["generated_at"], "review_backlog": data["review_backlog"],
                        "samples_waiting": data["samples_waiting"]})
    data["history"] = history
    return data
