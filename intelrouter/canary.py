"""The canary check (seed 004: canary 10 % -> monitor 48 h -> production): decide, then act through the registry.

`decide` is pure: from the online accuracy of @staging and @production (feedback labels joined to the
queries each variant answered) it returns promote, raise the share a step, roll back, or wait. Labels come
slowly, so it also looks at each variant's estimated accuracy (the mean top confidence of every query it
answered in the same period, `intelrouter.estimate`): a canary clearly worse on that estimate is rolled back
at once, before its window and its label minimum; promotion still needs the labels.
`check` reads the numbers, applies the decision with `intelrouter.registry`, and logs it to
logs/canary-*.json with the shadow replay the version passed before its canary. A promotion is undone with
`intelrouter rollback`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, case, func, select

from intelrouter import lifecycle, store
from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError, NotFoundError
from intelrouter.estimate import early_stop
from intelrouter.jsonfiles import write_report
from intelrouter.names import HUMAN_SOURCES

log = logging.getLogger(__name__)

Action = Literal["promote", "raise", "rollback", "wait", "none"]
# One-sided 95 %: a rollback needs staging to be worse than production by more than the tolerance with
# this confidence, so a handful of unlucky labels cannot reject a good model (it waits for more instead).
CONFIDENCE_Z = 1.645
STEP_TAG = "canary_step_at"  # registered-model tag: when the current canary share was set (naive UTC ISO)


@dataclass(frozen=True)
class VariantStats:
    """Feedback on the answers one variant gave: how many were labelled by a human, how many were right."""

    version: str | None
    labelled: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        """Online accuracy (None without labels)."""
        return self.correct / self.labelled if self.labelled else None


@dataclass(frozen=True)
class Estimate:
    """Label-free estimated accuracy of one variant: the mean top confidence of the queries it answered."""

    queries: int = 0
    accuracy: float | None = None  # None without queries


@dataclass(frozen=True)
class CanaryState:
    """What the decision looks at."""

    production: VariantStats | None
    staging: VariantStats | None
    share: float
    hours_at_share: float  # hours since the canary started or its share was last raised
    # every query each variant answered since the canary took its first one (UNCERTAIN answers included)
    production_estimate: Estimate | None = None
    staging_estimate: Estimate | None = None


@dataclass(frozen=True)
class Decision:
    """The canary check's verdict; `share` is the new traffic share when raising."""

    action: Action
    reason: str
    share: float | None = None
    difference: float | None = None  # staging accuracy minus production accuracy
    margin: float | None = None  # CONFIDENCE_Z standard errors of that difference
    basis: Literal["labels", "estimate"] = "labels"  # estimate: an early stop on estimated accuracy


def next_step(share: float, steps: list[float]) -> float | None:
    """The first configured share above the current one (None when the canary is at the last step)."""
    above = sorted(s for s in steps if s > share + 1e-9)
    return above[0] if above else None


def decide(
    state: CanaryState, *, steps: list[float], window_hours: float, min_feedback: int, tolerance: float,
    early_stop_margin: float | None = None,
) -> Decision:
    """Promote, raise the share a step, roll back, or wait; pure, so every branch is tested without servers.

    With `early_stop_margin`, a canary whose estimated accuracy is worse than production's by more than the
    margin beyond noise (`estimate.early_stop`) is rolled back at once, window and label minimum or not.
    """
    staging, production = state.staging, state.production
    if staging is None or staging.version is None:
        return Decision("none", "no canary: nothing carries @staging")
    if production is None or production.version is None:
        return Decision("promote", f"v{staging.version} is on @staging and nothing carries @production")
    stop = _early_stop(state, early_stop_margin)
    if stop is not None:
        return stop
    if state.hours_at_share < window_hours:
        return Decision(
            "wait", f"the canary has run {state.hours_at_share:.1f} h of {window_hours:g} h at {state.share:.0%}"
        )
    short = [f"{name} has {s.labelled}" for name, s in (("staging", staging), ("production", production))
             if s.labelled < min_feedback]
    if short or staging.accuracy is None or production.accuracy is None:
        return Decision("wait", f"need {min_feedback} feedback labels on each variant: " + ", ".join(short))
    p_s, p_p = staging.accuracy, production.accuracy
    diff = p_s - p_p
    se = math.sqrt(p_s * (1 - p_s) / staging.labelled + p_p * (1 - p_p) / production.labelled)
    margin = CONFIDENCE_Z * se
    numbers = (f"staging v{staging.version} {p_s:.1%} on {staging.labelled} labels vs production "
               f"v{production.version} {p_p:.1%} on {production.labelled}")
    if diff + margin < -tolerance:
        return Decision("rollback", f"{numbers}: worse by more than {tolerance:.0%}", None, diff, margin)
    if diff < -tolerance:
        return Decision("wait", f"{numbers}: possibly worse by more than {tolerance:.0%}, not yet certain; "
                        "collecting more feedback", None, diff, margin)
    step = next_step(state.share, steps)
    if step is not None:
        return Decision("raise", f"{numbers}: within tolerance, share {state.share:.0%} -> {step:.0%}",
                        step, diff, margin)
    return Decision("promote", f"{numbers}: within tolerance at the last step ({state.share:.0%})",
                    None, diff, margin)


def _early_stop(state: CanaryState, margin: float | None) -> Decision | None:
    """The rollback an estimated accuracy clearly worse than production's calls for, else None."""
    s, p = state.staging_estimate, state.production_estimate
    if margin is None or s is None or p is None or s.accuracy is None or p.accuracy is None:
        return None
    reason = early_stop(s.accuracy, p.accuracy, s.queries, p.queries, margin)
    if reason is None:
        return None
    version = state.staging.version if state.staging else None
    return Decision("rollback", f"v{version}: {reason}; stopped early, before the labels", None,
                    s.accuracy - p.accuracy, None, "estimate")


def variant_stats(
    conn: Connection, version: str | None, variant: str, since: datetime | None = None
) -> VariantStats:
    """Human labels on the queries `version` answered as `variant` (optionally from `since`)."""
    if version is None:
        return VariantStats(None)
    q, m = store.queries, store.ml_data
    where = [q.c.model_version == str(version), q.c.variant == variant, m.c.source.in_(HUMAN_SOURCES)]
    if since is not None:
        where.append(q.c.created_at >= since)
    labelled, correct = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((q.c.top_label == m.c.label, 1), else_=0)), 0))
        .select_from(q.join(m, m.c.query_id == q.c.id)).where(*where)
    ).one()
    return VariantStats(str(version), int(labelled), int(correct))


def variant_estimate(conn: Connection, version: str | None, variant: str, since: datetime | None = None) -> Estimate:
    """Estimated accuracy of `version` as `variant`: the mean top confidence of every query it answered (from
    `since`), UNCERTAIN answers included — online accuracy judges their top label too."""
    if version is None:
        return Estimate()
    q = store.queries
    where = [q.c.model_version == str(version), q.c.variant == variant]
    if since is not None:
        where.append(q.c.created_at >= since)
    n, mean = conn.execute(select(func.count(), func.avg(q.c.confidence)).where(*where)).one()
    return Estimate(int(n), float(mean) if n else None)


def canary_started(conn: Connection, version: str) -> datetime | None:
    """When the canary started taking traffic: the first query it answered as staging."""
    q = store.queries
    return conn.execute(
        select(func.min(q.c.created_at)).where(q.c.model_version == str(version), q.c.variant == "staging")
    ).scalar()


@dataclass
class CanaryReport:
    """One canary check: the numbers, the decision, and what was done (logs/canary-*.json)."""

    checked_at: str
    state: dict[str, Any]
    decision: dict[str, Any]
    applied: bool
    settings: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    shadow: dict[str, str] = field(default_factory=dict)  # the canary version's shadow replay (its shadow_* tags)


def read_state(settings: Settings, now: datetime | None = None) -> CanaryState:
    """The registry's aliases and share plus the store's feedback counts, as a CanaryState."""
    from intelrouter import registry

    now = now or store.utcnow()
    staging_mv = registry.alias_version(settings, "staging")
    production_mv = registry.alias_version(settings, "production")
    share = float(registry.canary_share(settings))
    if staging_mv is not None and production_mv is not None and staging_mv.version == production_mv.version:
        staging_mv = None  # a promotion cut short: no canary (`apply` finishes the promotion through recovery)
    if staging_mv is None:
        return CanaryState(VariantStats(str(production_mv.version) if production_mv else None), None, share, 0.0)
    step_at = _step_time(settings, str(staging_mv.version))
    production_version = str(production_mv.version) if production_mv else None
    with store.connect(settings) as conn:
        started = canary_started(conn, str(staging_mv.version))
        staging = variant_stats(conn, str(staging_mv.version), "staging")
        production = variant_stats(conn, production_version, "production", since=started)
        estimates = (variant_estimate(conn, production_version, "production", since=started),
                     variant_estimate(conn, str(staging_mv.version), "staging")) if started else (None, None)
    clock = max(t for t in (started, step_at) if t is not None) if (started or step_at) else None
    hours = (now - clock).total_seconds() / 3600 if clock else 0.0
    return CanaryState(production, staging, share, max(hours, 0.0), *estimates)


def _step_time(settings: Settings, version: str) -> datetime | None:
    """When the share of this canary version was last raised (from the registered-model tag), if ever."""
    from intelrouter import registry

    client = registry.get_client(settings)
    try:
        model = registry.call(settings, "registered model", client.get_registered_model, settings.model_name)
    except NotFoundError:
        return None
    value = (model.tags or {}).get(STEP_TAG, "")
    stamped_version, _, when = value.partition("@")
    if stamped_version != version or not when:
        return None
    return store.parse_when(when, STEP_TAG)


def apply(settings: Settings, state: CanaryState, decision: Decision, now: datetime | None = None) -> bool:
    """Carry the decision out in the registry, under the lifecycle lock and after `recovery.recover` (which finishes
    a move a crash cut short); returns True when the decision changed something."""
    from intelrouter import locks, recovery

    try:
        with locks.training_lock(settings, purpose="canary check"):
            recovery.recover(settings)
            changed = _apply(settings, state, decision, now)
            if changed and decision.action == "rollback":
                recovery.release_rows(settings)  # the rows only the rolled-back canary used are unused again
            return changed
    except locks.LockBusyError as exc:
        log.warning("canary check: %s; nothing done, the next check decides again", exc)
        return False


def _apply(settings: Settings, state: CanaryState, decision: Decision, now: datetime | None) -> bool:
    from intelrouter import registry

    staging = state.staging.version if state.staging else None
    if staging is not None:
        current = registry.alias_version(settings, "staging")
        if current is None or str(current.version) != staging:  # moved by hand while we were deciding
            log.warning("@staging changed during the canary check (was v%s): nothing done", staging)
            return False
    if decision.action == "promote" and staging:
        lifecycle.promote(settings, staging, to="production")
        return True
    if decision.action == "rollback" and staging:
        lifecycle.clear_staging(settings, reason=f"canary rolled back: {decision.reason}")
        return True
    if decision.action == "raise" and staging and decision.share is not None:
        # the step time first: if the share write then fails, the canary only waits one more window
        stamp = (now or store.utcnow()).isoformat(timespec="seconds")
        client = registry.get_client(settings)
        registry.call(settings, "registered model", client.set_registered_model_tag, settings.model_name, STEP_TAG,
                      f"{staging}@{stamp}")
        lifecycle.set_canary_share(settings, decision.share)
        return True
    return False


def decide_for(settings: Settings, state: CanaryState) -> Decision:
    """`decide` with the canary settings (steps, window, minimum feedback, tolerance, early-stop margin)."""
    return decide(state, steps=settings.canary_steps, window_hours=settings.canary_window_hours,
                  min_feedback=settings.canary_min_feedback, tolerance=settings.canary_tolerance,
                  early_stop_margin=settings.canary_early_stop_margin)


def record(settings: Settings, state: CanaryState, decision: Decision, applied: bool,
           now: datetime | None = None) -> CanaryReport:
    """Log a decision to logs/canary-<time>-<action>.json (a check with no canary writes no file)."""
    now = now or store.utcnow()
    log.info("canary check: %s (%s)%s", decision.action, decision.reason, "" if applied else " [not applied]")
    report = CanaryReport(
        checked_at=now.isoformat(timespec="seconds"),
        state=asdict(state),
        decision=asdict(decision),
        applied=applied,
        settings={k: getattr(settings, k) for k in
                  ("canary_steps", "canary_window_hours", "canary_min_feedback", "canary_tolerance",
                   "canary_early_stop_margin")},
        shadow=_shadow_of(settings, state.staging.version if state.staging else None),
    )
    if decision.action != "none":
        name = f"canary-{now.strftime('%Y%m%dT%H%M%S.%f')[:-3]}-{decision.action}.json"
        report.path = str(write_report(settings, name, asdict(report)))
    return report


def _shadow_of(settings: Settings, version: str | None) -> dict[str, str]:
    """The shadow replay a canary version passed (its `shadow_*` tags); a registry failure is a note, never an error:
    the decision must be logged."""
    if version is None:
        return {}
    from intelrouter import registry
    from intelrouter.rollout import version_shadow

    try:
        return version_shadow(dict(registry.get_version(settings, version).tags))
    except IntelRouterError as exc:
        return {"error": f"could not read the tags of v{version}: {exc}"}


def check(settings: Settings, dry_run: bool = False, now: datetime | None = None) -> CanaryReport:
    """Run one canary check: read, decide, apply (unless `dry_run`), and log the decision under logs/."""
    now = now or store.utcnow()
    state = read_state(settings, now)
    decision = decide_for(settings, state)
    applied = False if dry_run else apply(settings, state, decision, now)
    return record(settings, state, decision, applied, now)
