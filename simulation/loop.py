"""One policy's run of the loop on the simulated clock: routing, fallback, feedback, triage, review, training, the
gate and the canary check — the product's own code at every step — and what it measured each day.

A day has four six-hour shifts (the review sync runs every 6 h in seed 004). Each shift starts with a canary check;
at 00:00 the daily triage runs (and, every seventh day, the weekly training when enough samples wait); then the
review sync and the reviewers' work; then the shift's queries are routed through the serving runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
from sqlalchemy import bindparam, select, update

from intelrouter import canary, clock, lifecycle, loading, registry, review, store
from intelrouter.capture import record_outcomes
from intelrouter.config import Settings, load_settings
from intelrouter.errors import InsufficientDataError
from intelrouter.groundtruth import insert_labels, record_feedback, upsert_label
from intelrouter.jobs import train
from intelrouter.names import PRODUCTION, STAGING
from intelrouter.review_project import setup_project
from intelrouter.triage import triage
from intelrouter.triggers import should_train
from serving.app import Runtime
from simulation.data import Query, Traffic
from simulation.measure import Judge, day_metrics
from simulation.people import LabelStudioStandIn, Reviewers, Teacher

POLICIES = ("default", "seed", "random", "skyline")
# seed 004's process: every query that needs review is a task of its own (no grouping, no known-text resolution, no
# audit); the other policies run the product as configured
POLICY_SETTINGS: dict[str, dict[str, Any]] = {
    "seed": {"review_groups": False, "resolve_known_texts": False, "audit_labels": False, "audit_rate": 0.0},
}
SHIFTS = 4  # review syncs a day: every 6 h (seed 004)
TRAIN_EVERY_DAYS = 7  # the weekly training (seed 004: Sunday 03:00)


@dataclass
class Options:
    """How a simulation runs (the `intelrouter simulate` options)."""

    dataset: str = "clinc150"
    days: int = 28
    queries_per_day: int = 500
    review_budget: int = 100
    reviewer_error: float = 0.0
    feedback_rate: float = 0.05
    seed_per_label: int = 10
    teacher_share: float = 0.5
    zipf: float = 0.8
    users: int = 2000
    random_state: int = 0
    start: datetime = datetime(2026, 1, 4)  # a Sunday: the weekly training falls on Sundays, as in seed 004
    bad_candidate_week: int | None = None  # that week's training learns from partly shuffled labels (see _train)
    bad_label_share: float = 0.4  # share of the training rows whose labels are shuffled for it


@dataclass
class World:
    """What every policy shares: the data's parts, the teacher, and the held-out judge."""

    parts: Any  # simulation.data.Parts
    teacher: Teacher
    judge: Judge


@dataclass
class Run:
    """What one policy's run produced."""

    policy: str
    days: list[dict[str, Any]] = field(default_factory=list)
    trainings: list[dict[str, Any]] = field(default_factory=list)
    canary: list[dict[str, Any]] = field(default_factory=list)


def run_policy(policy: str, world: World, options: Options, overrides: dict[str, Any],
               tick: Callable[[int], None] = lambda n: None) -> Run:
    """Run the loop under `policy` for `options.days` days with settings `overrides` (its own store and registry)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    settings = load_settings(**{**overrides, **POLICY_SETTINGS.get(policy, {})})
    with clock.simulated(options.start):
        return _Loop(policy, world, options, settings, tick).run()


class _Loop:
    def __init__(self, policy: str, world: World, options: Options, settings: Settings,
                 tick: Callable[[int], None]) -> None:
        self.policy, self.world, self.options, self.settings, self.tick = policy, world, options, settings, tick
        self.result = Run(policy)
        self.truth: dict[str, str] = {}  # query id -> the dataset's label
        self.answers: list[dict[str, Any]] = []  # the router's answers of the current day
        self.rng = np.random.default_rng([options.random_state, POLICIES.index(policy)])
        self.ls = LabelStudioStandIn()
        labels = sorted(set(world.parts.seed["label"]) | set(world.parts.traffic["label"]))
        order = "random" if policy == "random" else "product"
        self.reviewers = Reviewers(self.truth, labels, options.reviewer_error, order, options.random_state)
        self.labelled = 0  # human labels spent (reviewers' answers; every query for the skyline)

    # --- the run --------------------------------------------------------------------------------------------
    def run(self) -> Run:
        o = self.options
        store.upgrade(self.settings)
        with store.connect(self.settings) as conn:
            seed = self.world.parts.seed.assign(language="en").to_dict("records")
            insert_labels(conn, seed, "import", shares=self.settings.split_shares)
        project_id = setup_project(self.settings, client=self.ls)
        self.settings = self.settings.model_copy(update={"label_studio_project_id": project_id})
        self._train(first=True)
        self.rt = Runtime(self.settings)
        self.rt.holder.refresh()
        self.rt.writer.start()
        self.loop = asyncio.new_event_loop()
        traffic = Traffic(self.world.parts.traffic, o.queries_per_day, o.start, o.zipf, o.users, o.random_state)
        try:
            for day in range(o.days + 1):  # the last "day" is the morning after: triage, maybe train, measure
                self._day(day, traffic.day(day) if day < o.days else [])
        finally:
            self.rt.writer.stop()
            self.rt.batcher.close()
            self.loop.close()
        return self.result

    def _day(self, day: int, queries: list[Query]) -> None:
        start = self.options.start + timedelta(days=day)
        shift_length = timedelta(hours=24 / SHIFTS)
        for shift in range(SHIFTS):
            at = start + shift * shift_length
            clock.set_time(at)
            self._canary(at)  # hourly in the product: before the night's training, as at 03:00 on a Sunday
            if shift == 0:
                daily = triage(self.settings, until=at)
                if day > 0:
                    self.result.days.append(self._measure(day - 1, daily))
                if day > 0 and day % TRAIN_EVERY_DAYS == 0:
                    self._train(week=day // TRAIN_EVERY_DAYS)
                if day == self.options.days:
                    return
            self._review(shift)
            self._route([q for q in queries if at <= q.at < at + shift_length])

    # --- the steps ------------------------------------------------------------------------------------------
    def _train(self, first: bool = False, week: int = 0) -> None:
        """The weekly rule, then the training job (gate, register, aliases) and the judge's verdict on it.

        In `bad_candidate_week` the job learns from labels shuffled on a share of its training rows (restored after
        it): a deliberately worse candidate. Whatever the gate and the shadow replay decide, an operator then starts
        its canary by hand (`intelrouter promote VERSION --to staging`), so the canary check's early stop on
        estimated accuracy is measured too."""
        with store.connect(self.settings) as conn:
            waiting = store.samples_waiting(conn)
        bad = not first and week == self.options.bad_candidate_week
        go, reason = should_train(waiting, self.settings.weekly_trigger, force=first or bad)
        event: dict[str, Any] = {"at": clock.now().isoformat(), "waiting": waiting, "trained": go, "reason": reason}
        if go:
            production = loading.load_alias(self.settings, PRODUCTION)
            try:
                with shuffled_labels(self.settings, self.options.bad_label_share if bad else 0.0, self.rng):
                    result = train(self.settings)
            except InsufficientDataError as exc:
                event.update(trained=False, reason=f"skipped: {exc}")
            else:
                candidate = loading.load_version(self.settings, result.version)
                event.update(self.world.judge.gate_verdict(result, candidate, production))
                event["shadow"] = (result.shadow or {}).get("status")
                if bad:
                    event["bad_candidate"] = True
                    if result.lifecycle not in ("canary", "production"):
                        lifecycle.promote(self.settings, result.version, STAGING)
                        event["forced_to_canary"] = clock.now().isoformat()
                if not first:
                    self.rt.holder.refresh()
        self.result.trainings.append(event)

    def _review(self, shift: int) -> None:
        """Pull the answers, push what waits (the product's sync), then the reviewers work through their share."""
        if self.policy == "skyline":
            return
        review.sync(self.settings, client=self.ls)
        budget = None
        if self.policy != "seed":
            per_shift, extra = divmod(self.options.review_budget, SHIFTS)
            budget = per_shift + (1 if shift < extra else 0)
        self.labelled += self.reviewers.work(self.ls, self.settings.label_studio_project_id, budget)

    def _canary(self, at: datetime) -> None:
        before = registry.where_aliases_point(self.settings)
        report = canary.check(self.settings, now=at)
        action = report.decision["action"]
        if action in ("promote", "rollback", "raise") and report.applied:
            self.rt.holder.refresh()
            if action in ("promote", "rollback"):
                self.result.canary.append(self.world.judge.canary_verdict(self.settings, report, before))

    def _route(self, queries: list[Query]) -> None:
        """Route through the serving runtime; fall back to the teacher on UNCERTAIN; some users give feedback."""
        if not queries:
            return
        answers = self.loop.run_until_complete(self._route_all(queries))
        self.rt.writer.flush(timeout=60)
        fallback = [a for a in answers if a["uncertain"]]
        taught = self.world.teacher.answer([a["text"] for a in fallback]) if fallback else []
        outcomes = [{"query_id": a["query_id"], "route_taken": a["route"]} for a in answers if not a["uncertain"]]
        outcomes += [{"query_id": a["query_id"], "route_taken": a["route"], "label": label, "confidence": conf,
                      "provider": "teacher"} for a, (label, conf) in zip(fallback, taught, strict=True)]
        record_outcomes(self.settings, outcomes)
        for a in answers:
            if self.rng.random() < self.options.feedback_rate:
                record_feedback(self.settings, a["query_id"], a["truth"])
        if self.policy == "skyline":  # every query labelled correctly, as if reviewed
            with store.connect(self.settings) as conn:
                for a in answers:
                    upsert_label(conn, query_id=a["query_id"], text=a["text"], label=a["truth"], source="label-studio",
                                 language="en", reviewer="skyline", shares=self.settings.split_shares)
            self.labelled += len(answers)
        self.answers += answers
        self.tick(len(queries))

    async def _route_all(self, queries: list[Query]) -> list[dict[str, Any]]:
        out = []
        for q in queries:
            clock.set_time(q.at)
            body = orjson.dumps({"text": q.text, "user_id": q.user_id, "language": "en"})
            status, payload, _ = await self.rt.route(body, None)
            if status != 200:
                raise RuntimeError(f"the router refused a simulated query ({status}): {payload!r}")
            answer = orjson.loads(payload) | {"text": q.text, "truth": q.truth}
            self.truth[answer["query_id"]] = q.truth
            out.append(answer)
        return out

    def _measure(self, day: int, daily: Any) -> dict[str, Any]:
        """The day's figures (taken after the next morning's triage, which triaged the day's queries)."""
        answers, self.answers = self.answers, []
        production = self.rt.holder.snapshot.production
        staging = self.rt.holder.snapshot.staging
        return day_metrics(day, self.settings, self.world.judge, answers, daily, self.truth, self.labelled,
                           production, staging, self.result)


def policy_overrides(base: Settings, data_dir: Any, database_url: str | None) -> dict[str, Any]:
    """Settings overrides of one policy: its own store, registry and logs under `data_dir`; the teacher trusted."""
    return {
        "data_dir": str(data_dir),
        "database_url": database_url or f"sqlite:///{data_dir}/intelrouter.db",
        "mlflow_tracking_uri": f"sqlite:///{data_dir}/mlflow.db",
        "trusted_providers": sorted({*base.trusted_providers, "teacher"}),
        "label_studio_url": "http://label-studio.simulated", "label_studio_api_key": "stand-in",
        "registry_poll_seconds": 3600.0,
    }


@contextmanager
def shuffled_labels(settings: Settings, share: float, rng: np.random.Generator) -> Iterator[None]:
    """Within the block, `share` of the training rows of `ml_data` carry each other's labels; restored after."""
    if share <= 0:
        yield
        return
    m = store.ml_data
    with store.connect(settings) as conn:
        rows = conn.execute(select(m.c.id, m.c.label).where(m.c.split == "train", m.c.label.is_not(None))).all()
    chosen = rng.choice(len(rows), size=int(len(rows) * share), replace=False)
    ids = [rows[i].id for i in chosen]
    original = [rows[i].label for i in chosen]
    shuffled = [original[i] for i in rng.permutation(len(original))]
    stmt = update(m).where(m.c.id == bindparam("b_id")).values(label=bindparam("b_label"))
    with store.connect(settings) as conn:
        conn.execute(stmt, [{"b_id": i, "b_label": lab} for i, lab in zip(ids, shuffled, strict=True)])
    try:
        yield
    finally:
        with store.connect(settings) as conn:
            conn.execute(stmt, [{"b_id": i, "b_label": lab} for i, lab in zip(ids, original, strict=True)])
