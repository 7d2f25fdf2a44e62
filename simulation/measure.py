"""What a simulated day measured, and the judge: the held-out set no part of the loop ever sees, used to say
whether each gate and canary decision was right.

A rejected candidate that was better on the held-out set is a wrong rejection; a passed or promoted one that was
worse than production by more than the gate tolerance is a wrong promotion. Accuracy here is the in-scope argmax
accuracy (what the gate compares); in-scope accuracy at the threshold and out-of-scope recall are reported beside it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from intelrouter import loading, report, store
from intelrouter.config import Settings
from intelrouter.data import collapse_copies
from intelrouter.evaluate import score
from intelrouter.model import Router


class Judge:
    """Scores routers on the held-out set (once per registered version) and judges the loop's decisions."""

    def __init__(self, heldout: pd.DataFrame, oos_label: str | None, tolerance: float) -> None:
        self.heldout, self.oos_label, self.tolerance = heldout, oos_label, tolerance
        self._scores: dict[str, dict[str, float]] = {}

    def score(self, router: Router, key: str | None = None) -> dict[str, float]:
        """Held-out accuracy (in-scope argmax), in-scope accuracy at the threshold, out-of-scope recall."""
        if key is not None and key in self._scores:
            return self._scores[key]
        scored = score(router, self.heldout)
        truth = np.array(scored.y_true, dtype=object)
        oos = truth == self.oos_label if self.oos_label else np.zeros(len(truth), dtype=bool)
        answered = scored.confidence >= router.threshold
        out = {"heldout_accuracy": float(scored.correct[~oos].mean()),
               "inscope_accuracy": float((scored.correct & answered)[~oos].mean())}
        if oos.any():
            out["oos_recall"] = float((~answered[oos]).mean())
        if key is not None:
            self._scores[key] = out
        return out

    def gate_verdict(self, result: Any, candidate: Router, production: tuple[Any, Router] | None) -> dict[str, Any]:
        """A training's outcome beside the held-out truth: was the gate right?"""
        cand = self.score(candidate, f"v{result.version}")["heldout_accuracy"]
        out = {"version": result.version, "semver": result.semver, "lifecycle": result.lifecycle,
               "gate_passed": result.gate.passed, "reasons": result.gate.reasons,
               "candidate_heldout_accuracy": cand}
        if production is None:
            return out | {"gate_right": result.gate.passed == (cand >= 0.5)}
        prod = self.score(production[1], f"v{production[0].version}")["heldout_accuracy"]
        wrong_rejection = not result.gate.passed and cand > prod
        wrong_pass = result.gate.passed and cand < prod - self.tolerance
        return out | {"production_version": str(production[0].version), "production_heldout_accuracy": prod,
                      "wrong_rejection": wrong_rejection, "wrong_pass": wrong_pass,
                      "gate_right": not (wrong_rejection or wrong_pass)}

    def canary_verdict(self, settings: Settings, check: Any, before: dict[str, Any]) -> dict[str, Any]:
        """A canary promotion or rollback beside the held-out truth."""
        action = check.decision["action"]
        staging, production = before["staging"], before["production"]
        out: dict[str, Any] = {"at": check.checked_at, "action": action, "staging": staging,
                               "production": production, "reason": check.decision["reason"]}
        if staging is None or production is None:
            return out | {"right": True}
        s = self.score(loading.load_version(settings, staging), f"v{staging}")["heldout_accuracy"]
        p = self.score(loading.load_version(settings, production), f"v{production}")["heldout_accuracy"]
        right = s >= p - self.tolerance if action == "promote" else s <= p
        return out | {"staging_heldout_accuracy": s, "production_heldout_accuracy": p, "right": right}


def wrong_label_rate(settings: Settings, truth: dict[str, str]) -> tuple[float, int]:
    """Share of the ground truth training would use (one row per question) whose label is not the dataset's."""
    t = store.ml_data
    cols = ["id", "query_id", "text", "label", "source", "text_key", "created_at"]
    with store.connect(settings) as conn:
        frame = pd.DataFrame(conn.execute(select(*(t.c[c] for c in cols))).all(), columns=cols)
    frame, _ = collapse_copies(frame)
    if frame.empty:
        return 0.0, 0
    expected = [truth.get(q, lab) if q is not None else lab for q, lab in zip(frame["query_id"], frame["label"],
                                                                               strict=True)]
    wrong = int((frame["label"].to_numpy(dtype=object) != np.array(expected, dtype=object)).sum())
    return wrong / len(frame), len(frame)


def day_metrics(day: int, settings: Settings, judge: Judge, answers: list[dict[str, Any]], daily: Any,
                truth: dict[str, str], labelled: int, production: Any, staging: Any, run: Any) -> dict[str, Any]:
    """The figures of one simulated day (see the README's "The loop, measured" for what each means)."""
    n = len(answers)
    uncertain = sum(a["uncertain"] for a in answers)
    answered_right = sum((not a["uncertain"]) and a["label"] == a["truth"] for a in answers)
    when = store.utcnow() - timedelta(microseconds=1)  # the next morning: the report covers the day just ended
    rows = report.collect(settings, days=1, now=when).days
    row = rows[-1] if rows else {}
    wrong_rate, ground_truth_rows = wrong_label_rate(settings, truth)
    trainings = [t for t in run.trainings if t.get("trained")]
    out = {
        "day": day + 1,
        "queries": n,
        "production_version": production.version if production else None,
        "staging_version": staging.version if staging else None,
        **(judge.score(production.router, f"v{production.version}") if production else {}),
        "online_accuracy": row.get("online_accuracy"),
        "online_labels": row.get("labelled", 0),
        "true_online_accuracy": answered_right / n if n else None,
        # the router's estimate without labels (mean top confidence of its own answers, the monitoring report's)
        # beside the truth it estimates: the share of its answers whose top label is right
        "estimated_accuracy": row.get("estimated_accuracy"),
        "top_label_accuracy": sum(a["top_label"] == a["truth"] for a in answers) / n if n else None,
        "fallback_rate": uncertain / n if n else None,
        "auto_approval_rate": daily.auto_approval_rate if daily.triaged else None,
        "human_labels": labelled,
        "ground_truth_rows": ground_truth_rows,
        "wrong_label_rate": wrong_rate,
        "versions_trained": len(trainings),
        "versions_passed": sum(bool(t.get("gate_passed")) for t in trainings),
        "versions_promoted": sum(c["action"] == "promote" for c in run.canary) + sum(
            t.get("lifecycle") == "production" for t in trainings),
        "versions_rolled_back": sum(c["action"] == "rollback" for c in run.canary),
        "wrong_gate_rejections": sum(bool(t.get("wrong_rejection")) for t in trainings),
        "wrong_promotions": sum(bool(t.get("wrong_pass")) for t in trainings) + sum(
            c["action"] == "promote" and not c["right"] for c in run.canary),
        "wrong_rollbacks": sum(c["action"] == "rollback" and not c["right"] for c in run.canary),
    }
    return out
