"""What callers finally did with the answers, measured: the fallback rate per day, per model version and variant.

A caller reports `route_taken` per query (POST /outcome, `capture.record_outcomes`, or the capture JSONL). A
reported route counts as a fallback when it is one of `INTELROUTER_FALLBACK_ROUTES` or the router's own fallback
target `INTELROUTER_FALLBACK_ROUTE`. The caller-reported fallback rate is the share of queries with a reported
outcome that ended at a fallback; queries without a report are left out (their share is visible as `reported`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, literal, select

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.names import HUMAN_SOURCES, PRODUCTION


def fallback_routes(settings: Settings) -> tuple[str, ...]:
    """The reported routes that count as a fallback (lower case): the setting's list and the router's fallback route."""
    routes = {r.strip().lower() for r in (*settings.fallback_routes, settings.fallback_route)}
    return tuple(sorted(r for r in routes if r))


def normalise_route(value: Any) -> Any:
    """A reported route as stored: trimmed and lower case (other values are left for validation to refuse)."""
    return value.strip().lower() if isinstance(value, str) else value


def rate(part: int, whole: int) -> float | None:
    """part / whole rounded to 4 places, None without a whole."""
    return round(part / whole, 4) if whole else None


def _flag(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def _key(name: str) -> Any:
    q = store.queries
    return func.date(q.c.created_at).label("day") if name == "day" else q.c[name]


def reported(conn: Connection, since: datetime, until: datetime, routes: Iterable[str], *keys: str
             ) -> dict[tuple[str | None, ...], tuple[int, int]]:
    """(queries with a reported outcome, of which ended at a fallback) grouped by `keys` (day, model_version,
    variant) over [since, until); the key values are strings (None stays None)."""
    q = store.queries
    routes = tuple(routes)
    columns = [_key(k) for k in keys]
    is_fallback = q.c.route_taken.in_(routes) if routes else literal(False)
    rows = conn.execute(
        select(*columns, func.count().label("reported"), _flag(is_fallback).label("fallback"))
        .where(q.c.created_at >= since, q.c.created_at < until, q.c.route_taken.is_not(None))
        .group_by(*columns)
    ).all()
    return {tuple(None if v is None else str(v) for v in r[:len(keys)]): (int(r.reported), int(r.fallback))
            for r in rows}


def per_version(conn: Connection, routes: Iterable[str]) -> dict[str, dict[str, int]]:
    """Each model version's whole life: answers given, answers that ended at a fallback (the caller's reported
    route when there is one, else the router's UNCERTAIN), answers a human labelled and how many were right."""
    q, m = store.queries, store.ml_data
    routes = tuple(routes)
    went_to_fallback = case(
        (q.c.route_taken.is_not(None), q.c.route_taken.in_(routes) if routes else literal(False)),
        else_=q.c.uncertain,
    )
    served = conn.execute(
        select(q.c.model_version, func.count().label("answered"), _flag(went_to_fallback).label("fallback"))
        .where(q.c.model_version.is_not(None)).group_by(q.c.model_version)
    ).all()
    judged = {
        str(r.model_version): r
        for r in conn.execute(
            select(q.c.model_version, func.count().label("labelled"),
                   _flag(q.c.top_label == m.c.label).label("correct"))
            .select_from(q.join(m, m.c.query_id == q.c.id))
            .where(q.c.model_version.is_not(None), m.c.source.in_(HUMAN_SOURCES)).group_by(q.c.model_version)
        )
    }
    numbers = {}
    for r in served:
        lab = judged.get(str(r.model_version))
        numbers[str(r.model_version)] = {"answered": int(r.answered), "fallback": int(r.fallback),
                                         "labelled": int(lab.labelled) if lab else 0,
                                         "correct": int(lab.correct) if lab else 0}
    return numbers


def caller_outcomes(conn: Connection, since: datetime, until: datetime, settings: Settings) -> dict[str, dict]:
    """Queries with a caller-reported outcome and how many ended at a fallback, per day and per (version, variant)."""
    routes = fallback_routes(settings)
    return {"day": reported(conn, since, until, routes, "day"),
            "version": reported(conn, since, until, routes, "model_version", "variant")}


def add_caller_fallback(days: list[dict[str, Any]], versions: list[dict[str, Any]], production: dict[str, Any],
                        outcomes: dict[str, dict]) -> None:
    """Put the caller-reported fallback rate beside the UNCERTAIN rate: per day, per version, for production.

    `caller_fallback_rate` is None where no caller reported an outcome (the dashboard then says "not measured").
    """
    for d in days:
        n, fallback = outcomes["day"].get((d["day"],), (0, 0))
        d["outcomes_reported"], d["caller_fallback_rate"] = n, rate(fallback, n)
    for v in versions:
        key = (None if v["model_version"] is None else str(v["model_version"]), v["variant"])
        n, fallback = outcomes["version"].get(key, (0, 0))
        v["outcomes_reported"], v["caller_fallback"], v["caller_fallback_rate"] = n, fallback, rate(fallback, n)
    prod = [v for v in versions if v["variant"] == PRODUCTION]
    n, fallback = sum(v["outcomes_reported"] for v in prod), sum(v["caller_fallback"] for v in prod)
    production["outcomes_reported"], production["caller_fallback_rate"] = n, rate(fallback, n)
