"""A store that has been through the loop, for the dashboard tests.

Three real trainings (v1 @production, a rejected regression, a @staging canary), three days of production and
canary traffic with triage and feedback, a real canary check and monitoring report at the end of each day.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from training_support import seed_ml_data, synthetic_rows, write_jsonl

from intelrouter import canary, store
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.groundtruth import record_feedback
from intelrouter.jobs import train
from intelrouter.report import run_report
from intelrouter.triage import triage

INTENTS = ["book_flight", "play_music", "set_alarm", "weather"]
PRODUCTION, STAGING = 24, 8  # answers per day of each variant, every one labelled by its user


class Day(NamedTuple):
    """One day of traffic: how long ago, wrong answers of each variant, uncertain production answers, and
    confident answers of a trusted provider (triage auto-approves them)."""

    ago: int
    wrong_production: int
    wrong_staging: int
    uncertain: int
    teacher: int


DAYS = (Day(3, 6, 2, 6, 3), Day(2, 4, 1, 4, 4), Day(1, 2, 1, 2, 6))  # the router gets better, fallbacks fall


def loop_settings(root: Path, **extra: Any) -> Settings:
    """Settings on the embedded stores under `root`, with a canary judged as soon as it has 10 labels a side."""
    return load_settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'ir.db'}",
                         mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}", canary_window_hours=0,
                         canary_min_feedback=10, **extra)


def _train_three(settings: Settings, root: Path) -> dict[str, Any]:
    seed_ml_data(settings, synthetic_rows(30, seed=1))
    first = train(settings)
    bad = synthetic_rows(40, seed=5, split="train")
    for i, row in enumerate(bad):
        row["label"] = INTENTS[i % 4]  # labels unrelated to the texts: the gate sees a regression
    export = write_jsonl(root / "regression.jsonl", bad + synthetic_rows(20, seed=4, split="test"))
    rejected = train(settings, source=str(export))
    seed_ml_data(settings, synthetic_rows(15, seed=2))
    canary_version = train(settings)
    assert (first.lifecycle, rejected.lifecycle, canary_version.lifecycle) == ("production", "rejected", "canary")
    return {"production": first, "rejected": rejected, "staging": canary_version}


def _day_of_traffic(settings: Settings, d: Day, day: datetime, versions: dict[str, Any], rng: random.Random) -> None:
    tag = day.strftime("%m%d")
    rows, truth = [], {}
    plan = ([("production", versions["production"].version, i < d.wrong_production, i < d.uncertain)
             for i in range(PRODUCTION)]
            + [("staging", versions["staging"].version, i < d.wrong_staging, False) for i in range(STAGING)])
    for i, (variant, version, wrong, uncertain) in enumerate(plan):
        label = rng.choice(INTENTS)
        answer = INTENTS[(INTENTS.index(label) + 1) % 4] if wrong else label
        qid = f"{tag}-{variant}-{i}"
        rows.append({"id": qid, "text": f"{label} query {qid}", "predicted_label": "UNCERTAIN" if uncertain else
                     answer, "top_label": answer, "confidence": 0.3 if uncertain else 0.7, "uncertain": uncertain,
                     "model_version": version, "variant": variant, "created_at": day + timedelta(hours=12)})
        truth[qid] = label
    rows += [{"id": f"{tag}-teacher-{i}", "text": f"teacher query {tag} {i}", "predicted_label": "weather",
              "top_label": "weather", "confidence": 0.97, "provider": "teacher",
              "created_at": day + timedelta(hours=12)} for i in range(d.teacher)]
    log_queries(settings, rows)
    triage(settings)
    for qid, label in truth.items():
        record_feedback(settings, qid, label)


def build_loop(root: Path) -> dict[str, Any]:
    """Train, serve three days of traffic, check the canary and write the monitoring report each day."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("INTELROUTER_")]:
            mp.delenv(key)
        settings = loop_settings(root)
    versions = _train_three(settings, root)
    rng = random.Random(7)
    midnight = datetime.combine(store.utcnow().date(), datetime.min.time())
    decisions = []
    for d in DAYS:
        day = midnight - timedelta(days=d.ago)
        _day_of_traffic(settings, d, day, versions, rng)
        decisions.append(canary.check(settings, now=day + timedelta(hours=13)).decision["action"])
        run_report(settings, now=day + timedelta(hours=23))
    assert decisions == ["wait", "raise", "raise"], decisions
    return {"settings": settings, "root": root, "versions": versions, "midnight": midnight}
