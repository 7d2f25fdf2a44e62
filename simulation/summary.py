"""The simulation's figures put together: per policy its days, its weeks and a summary, and the run's goals."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from intelrouter.config import Settings
from simulation.loop import Options, Run, World

# seed 004's expected trajectory, shown beside the measured weeks
SEED_EXPECTATIONS = {
    "auto_approval_rate": "about 60 % (week 1)",
    "heldout_accuracy": "86–88 % at week 2, 90–92 % at month 1",
    "fallback_rate": "15 % → 8 % over the first month",
}
WEEK_STATE = ("heldout_accuracy", "inscope_accuracy", "oos_recall", "human_labels", "wrong_label_rate",
              "ground_truth_rows", "production_version", "versions_trained", "versions_passed", "versions_promoted",
              "versions_rolled_back", "wrong_gate_rejections", "wrong_promotions", "wrong_rollbacks")
WEEK_RATES = ("fallback_rate", "auto_approval_rate", "online_accuracy", "true_online_accuracy", "estimated_accuracy",
              "top_label_accuracy")


def weeks(days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Days grouped by seven: the state at the week's end, the rates averaged over its days."""
    out = []
    for start in range(0, len(days), 7):
        block = days[start:start + 7]
        row: dict[str, Any] = {"week": start // 7 + 1, "days": len(block)}
        row |= {k: block[-1].get(k) for k in WEEK_STATE if k in block[-1]}
        for key in WEEK_RATES:
            values = [d[key] for d in block if d.get(key) is not None]
            row[key] = sum(values) / len(values) if values else None
        out.append(row)
    return out


def labels_to_reach(days: list[dict[str, Any]], target: float) -> int | None:
    """Human labels spent when @production first reached `target` held-out accuracy (None: never)."""
    for day in days:
        if (day.get("heldout_accuracy") or 0.0) >= target:
            return int(day["human_labels"])
    return None


def summarise(runs: dict[str, Run], options: Options, world: World, settings: Settings) -> dict[str, Any]:
    """The JSON the command prints: options, data parts, per-policy weeks/days/decisions, summaries and goals."""
    policies: dict[str, Any] = {}
    for name, run in runs.items():
        last = run.days[-1] if run.days else {}
        policies[name] = {
            "weeks": weeks(run.days), "days": run.days, "trainings": run.trainings, "canary": run.canary,
            "summary": {"final_heldout_accuracy": last.get("heldout_accuracy"),
                        "human_labels": last.get("human_labels"), "final_fallback_rate": last.get("fallback_rate"),
                        "wrong_gate_rejections": last.get("wrong_gate_rejections", 0),
                        "wrong_promotions": last.get("wrong_promotions", 0),
                        "wrong_rollbacks": last.get("wrong_rollbacks", 0)},
        }
    for name, run in runs.items():
        bad = bad_candidate(run)
        if bad:
            policies[name]["bad_candidate"] = bad
    goals = _goals(policies)
    return {"dataset": world.parts.name, "options": asdict(options) | {"start": options.start.isoformat()},
            "parts": world.parts.sizes(), "teacher_heldout": world.judge.score(world.teacher.router),
            "settings": {k: getattr(settings, k) for k in ("weekly_trigger", "canary_share", "canary_steps",
                                                           "canary_window_hours", "canary_min_feedback",
                                                           "auto_approve_threshold", "review_threshold",
                                                           "gate_tolerance", "uncertain_threshold")},
            "seed_expectations": SEED_EXPECTATIONS, "policies": policies, "goals": goals}


def _goals(policies: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, measured: default vs random, labels to 95 % of the skyline, no wrong decision."""
    goals: dict[str, Any] = {}
    final = {p: v["summary"]["final_heldout_accuracy"] for p, v in policies.items()}
    if "skyline" in final and final["skyline"]:
        target = 0.95 * final["skyline"]
        spent = {p: labels_to_reach(v["days"], target) for p, v in policies.items()}
        goals["target_heldout_accuracy"] = target
        goals["labels_to_target"] = spent
        if spent.get("default") is not None and spent.get("seed") is not None:
            goals["default_at_most_half_of_seed"] = spent["default"] <= 0.5 * spent["seed"]
    if "default" in final and "random" in final and None not in (final["default"], final["random"]):
        goals["default_at_least_random"] = final["default"] >= final["random"]
    goals["no_wrong_decision"] = all(
        v["summary"]["wrong_gate_rejections"] == 0 and v["summary"]["wrong_promotions"] == 0
        for v in policies.values())
    return goals


def bad_candidate(run: Run) -> dict[str, Any] | None:
    """What became of the deliberately worse candidate: the gate, the shadow replay, and when its canary stopped."""
    event = next((t for t in run.trainings if t.get("bad_candidate")), None)
    if event is None:
        return None
    out = {k: event.get(k) for k in ("version", "gate_passed", "lifecycle", "shadow", "candidate_heldout_accuracy",
                                     "production_heldout_accuracy", "forced_to_canary")}
    started = event.get("forced_to_canary") or (event["at"] if event.get("lifecycle") == "canary" else None)
    stop = next((c for c in run.canary if c.get("staging") == event.get("version")), None)
    if started and stop:
        hours = (datetime.fromisoformat(str(stop["at"])[:19]) - datetime.fromisoformat(started[:19])).total_seconds()
        out |= {"canary_action": stop["action"], "canary_reason": stop["reason"], "hours_of_canary": hours / 3600}
    return out
