"""The monitoring report's view of the model that needs no labels: estimated accuracy, calibration, drift.

Estimated accuracy (`intelrouter.estimate`) is the mean top confidence of the queries a variant answered: the
router's own answers (variant production or staging; the teacher's captured answers are not the router's),
UNCERTAIN answers included, because online accuracy judges the top label of every labelled query too. It
estimates in-scope accuracy: an out-of-scope query has no right label, yet its confidence (calibrated on
in-scope rows) counts — CLINC150's out-of-scope test queries average 0.40 — so traffic with a share s of them
reads about 0.4 s too high, where labelled accuracy counts them only when a human labels one.

Calibration is checked on the labelled queries themselves (their mean confidence against the share right), so
review's preference for unsure queries does not bias it. Drift compares @production's traffic in the window with
the reference stored with the model when it was trained (`drift.reference`), loading that model once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select

from intelrouter import loading, registry, store
from intelrouter.config import Settings
from intelrouter.drift import from_reference
from intelrouter.errors import IntelRouterError
from intelrouter.estimate import calibration_gap
from intelrouter.names import HUMAN_SOURCES, PRODUCTION, STAGING
from intelrouter.outcomes import rate  # part / whole to 4 places: a mean is a sum over a count

log = logging.getLogger(__name__)

ROUTER_VARIANTS = (PRODUCTION, STAGING)  # queries the router answered itself


def estimates(conn: Connection, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Per day and per (model version, variant): answered queries and their estimated accuracy beside the human
    labels, the share right and the mean confidence of those labelled queries."""
    q, m = store.queries, store.ml_data
    keys = (func.date(q.c.created_at).label("day"), q.c.model_version, q.c.variant)
    where = (q.c.created_at >= since, q.c.created_at < until, q.c.variant.in_(ROUTER_VARIANTS))
    served = conn.execute(select(*keys, func.count().label("n"), func.sum(q.c.confidence).label("conf"))
                          .where(*where).group_by(*keys)).all()
    judged = {(str(r.day), r.model_version, r.variant): r for r in conn.execute(
        select(*keys, func.count().label("n"), func.sum(q.c.confidence).label("conf"),
               func.coalesce(func.sum(case((q.c.top_label == m.c.label, 1), else_=0)), 0).label("correct"))
        .select_from(q.join(m, m.c.query_id == q.c.id)).where(*where, m.c.source.in_(HUMAN_SOURCES))
        .group_by(*keys))}
    rows = []
    for r in sorted(served, key=lambda r: (str(r.day), str(r.model_version or ""), str(r.variant))):
        lab = judged.get((str(r.day), r.model_version, r.variant))
        n_lab = int(lab.n) if lab else 0
        rows.append({
            "day": str(r.day), "model_version": r.model_version, "variant": r.variant, "answered": int(r.n),
            "confidence_sum": float(r.conf or 0.0), "estimated_accuracy": rate(float(r.conf or 0.0), int(r.n)),
            "labelled": n_lab, "correct": int(lab.correct) if lab else 0,
            "labelled_confidence_sum": float(lab.conf or 0.0) if lab else 0.0,
            "online_accuracy": rate(int(lab.correct), n_lab) if lab else None,
            "labelled_confidence": rate(float(lab.conf or 0.0), n_lab) if lab else None,
        })
    return rows


def add_estimates(by_version_day: list[dict[str, Any]], days: list[dict[str, Any]],
                  versions: list[dict[str, Any]]) -> None:
    """Put `estimated_accuracy` (and the mean confidence of the labelled queries) into the report's per-day rows
    (all router answers that day) and per-version rows, in place."""
    totals: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0])
    for r in by_version_day:
        for key in (("day", r["day"]), ("version", r["model_version"], r["variant"])):
            t = totals[key]
            t[0] += r["answered"]
            t[1] += r["confidence_sum"]
            t[2] += r["labelled"]
            t[3] += r["labelled_confidence_sum"]
    for row, key in [*((d, ("day", d["day"])) for d in days),
                     *((v, ("version", v["model_version"], v["variant"])) for v in versions)]:
        n, conf, n_lab, lab_conf = totals.get(key, (0, 0.0, 0, 0.0))
        row["estimated_accuracy"] = rate(conf, int(n))
        row["labelled_confidence"] = rate(lab_conf, int(n_lab))


def calibration_alerts(by_version_day: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """`calibration_drift` when production's labelled queries in the window are right far less (or more) often than
    their mean confidence says, beyond the bound and the labels' noise, on at least `alert_min_samples` labels."""
    prod = [r for r in by_version_day if r["variant"] == PRODUCTION]
    n = sum(r["labelled"] for r in prod)
    if n < settings.alert_min_samples:
        return []
    estimated = sum(r["labelled_confidence_sum"] for r in prod) / n
    labelled = sum(r["correct"] for r in prod) / n
    gap = calibration_gap(estimated, labelled, n, settings.estimate_divergence_bound)
    if gap is None:
        return []
    return [{"kind": "calibration_drift", "message": f"production: {gap.message}", "value": round(gap.gap, 4),
             "limit": settings.estimate_divergence_bound}]


def public_rows(by_version_day: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per version-day rows without the running sums (what the report file shows)."""
    return [{k: v for k, v in r.items() if not k.endswith("_sum")} for r in by_version_day]


def recent_answers(settings: Settings, version: str, since: datetime, until: datetime
                   ) -> tuple[list[str], list[str], list[float]]:
    """Texts, answers and top confidences of the queries `version` served as @production in [since, until), newest
    first, at most `shadow_max_queries`."""
    q = store.queries
    with store.connect(settings) as conn:
        rows = conn.execute(
            select(q.c.text, q.c.predicted_label, q.c.confidence)
            .where(q.c.variant == PRODUCTION, q.c.model_version == str(version), q.c.created_at >= since,
                   q.c.created_at < until)
            .order_by(q.c.created_at.desc()).limit(settings.shadow_max_queries)
        ).all()
    return [r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows]


def drift_section(settings: Settings, since: datetime, until: datetime) -> tuple[dict[str, Any], list[dict]]:
    """@production's traffic in the window against the reference stored with it: (report section, alerts). A
    registry that cannot be read, or a model without a reference, is a note in the section, never an error."""
    try:
        mv = registry.alias_version(settings, PRODUCTION)
        if mv is None:
            return {"status": "no @production model"}, []
        version = str(mv.version)
        texts, labels, confidences = recent_answers(settings, version, since, until)
        head = {"version": version, "semver": mv.tags.get("semver"), "queries": len(texts)}
        if not texts:
            return head | {"status": f"no queries served by v{version} as production in the window"}, []
        router = loading.load_version(settings, version)
        ref = router.info.get("drift_reference")
        if not ref:
            return head | {"status": f"v{version} was trained before models kept a drift reference: the next "
                                     "retrain stores one"}, []
        found = from_reference(ref, router, texts, labels, confidences, psi_threshold=settings.drift_psi_threshold,
                               unseen_ceiling=settings.drift_unseen_share_ceiling)
    except (IntelRouterError, ValueError) as exc:
        log.warning("drift not measured: %s", exc)
        return {"status": f"not measured: {exc}"}, []
    alerts = found.alerts(min_queries=settings.alert_min_samples)
    if len(texts) < settings.alert_min_samples:
        status = f"{len(texts)} queries, fewer than {settings.alert_min_samples}: no alert"
    else:
        status = "drift" if alerts else "no drift"
    return head | {"status": status, **found.as_dict()}, alerts


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.1%}"


def markdown(by_version_day: list[dict[str, Any]], drift: dict[str, Any] | None) -> list[str]:
    """Markdown lines: estimated beside labelled accuracy per day and version, then the drift checks."""
    lines = ["", "## Estimated accuracy (mean top confidence) per day and version", ""]
    if by_version_day:
        lines += ["| day | version | variant | answered | estimated | labelled | online accuracy | "
                  "labelled confidence |", "|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['day']} | {r['model_version'] or '–'} | {r['variant']} | {r['answered']} | "
                  f"{_pct(r['estimated_accuracy'])} | {r['labelled']} | {_pct(r['online_accuracy'])} | "
                  f"{_pct(r['labelled_confidence'])} |" for r in by_version_day]
    else:
        lines.append("No router answers in the window.")
    lines += ["", "## Drift of production traffic against its training data", ""]
    if not drift or "labels" not in drift:
        return [*lines, (drift or {}).get("status", "not measured") + "."]
    unseen = drift["unseen_share"]
    lines += [f"v{drift['version']} on {drift['queries']} queries: **{drift['status']}**.", "",
              f"- {drift['labels']['message']}", f"- {drift['confidences']['message']}",
              "- unseen words: " + ("not measured (the model has no word features)" if unseen is None else
                                    f"{unseen:.1%} of recent words vs {drift['unseen_reference']:.1%} in its held-out "
                                    f"rows (ceiling +{drift['unseen_ceiling'] * 100:.1f} points)")]
    return lines
