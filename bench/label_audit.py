"""Bench: the teacher audit on CLINC150 — what it catches of a teacher's real errors and of careless feedback.

Run: .venv/bin/python bench/label_audit.py [--folds 3] [--feedback-error 0.1]
The world of `intelrouter simulate`, in one step: CLINC150 train + val cut into a seed (10 rows per intent,
imported), the teacher's own part (half of the rest; the teacher is the product's pipeline fitted on it) and
traffic. A router fitted on the seed finds the hard traffic (its least confident 40 %); the teacher answers it and
its most confident 70 % become auto-approved ground truth, its mistakes as they come (no synthetic flips). Beside
them, 1 000 other traffic rows arrive as user feedback, a share of it wrong (a random other intent). The audit
(`intelrouter.audit.find_issues`, the code training runs) checks both. Anchor, same run, same rows: one featurise
+ fit of the pipeline, what a training pays anyway. Prints a markdown block.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from intelrouter.audit import find_issues
from intelrouter.classifiers import make_classifier
from intelrouter.config import load_settings
from intelrouter.features import TextFeatures
from intelrouter.keys import text_key

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "clinc150" / "data_full.json"


def _fit(frame: pd.DataFrame, column: str) -> tuple[TextFeatures, object]:
    features = TextFeatures()
    model = make_classifier("lr")
    model.fit(features.fit_transform(frame["text"].tolist()), frame[column].to_numpy(dtype=object))
    return features, model


def world(feedback_error: float, seed: int = 0) -> pd.DataFrame:
    """The ground truth a training would audit: seed imports, the teacher's auto-approved answers, user feedback;
    `true` keeps each row's right label."""
    data = json.loads(DATASET.read_text())
    rows = pd.DataFrame(data["train"] + data["val"], columns=["text", "true"]).drop_duplicates("text")
    rng = np.random.default_rng(seed)
    rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
    seeded = rows.groupby("true").head(10)
    rest = rows.drop(seeded.index)
    own = rng.random(len(rest)) < 0.5
    teacher_part, traffic = rest[own], rest[~own]
    rf, router = _fit(seeded, "true")
    confidence = router.predict_proba(rf.transform(traffic["text"].tolist())).max(axis=1)
    hard = traffic[confidence <= np.quantile(confidence, 0.4)]
    tf, teacher = _fit(teacher_part, "true")
    probs = teacher.predict_proba(tf.transform(hard["text"].tolist()))
    answered = hard.assign(label=teacher.classes_[probs.argmax(axis=1)], confidence=probs.max(axis=1))
    auto = answered[answered["confidence"] >= answered["confidence"].quantile(0.3)]
    users = traffic.drop(hard.index).sample(n=1000, random_state=seed)
    labels = sorted(rows["true"].unique())
    careless = rng.random(len(users)) < feedback_error
    given = [str(rng.choice([lab for lab in labels if lab != t])) if c else t
             for t, c in zip(users["true"], careless, strict=True)]
    frame = pd.concat([seeded.assign(label=seeded["true"], source="import"), auto.assign(source="auto-approved"),
                       users.assign(label=given, source="feedback")], ignore_index=True)
    frame["id"] = range(len(frame))
    frame["text_key"] = [text_key(t) for t in frame["text"]]
    return frame.drop_duplicates("text_key").reset_index(drop=True)


def _row(frame: pd.DataFrame, flagged: pd.DataFrame, source: str) -> str:
    part = frame[frame["source"] == source]
    wrong = part["label"] != part["true"]
    hit = flagged[(flagged["source"] == source) & (flagged["label"] != flagged["true"])]
    mine = flagged[flagged["source"] == source]
    kept = part[~part["text_key"].isin(flagged["text_key"])]
    after = (kept["label"] != kept["true"]).mean()
    return (f"| {source} | {len(part):,} | {int(wrong.sum()):,} ({wrong.mean():.2%}) | {len(mine):,} | "
            f"{len(hit) / max(len(mine), 1):.0%} | {len(hit) / max(int(wrong.sum()), 1):.0%} | {after:.2%} "
            f"({after / max(wrong.mean(), 1e-9):.2f}×) |")


def main() -> None:
    """Run the bench and print the markdown block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--feedback-error", type=float, default=0.1)
    args = parser.parse_args()
    frame = world(args.feedback_error)
    settings = load_settings(audit_folds=args.folds)
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    _fit(frame, "label")
    anchor_s = time.perf_counter() - t
    t = time.perf_counter()
    flagged, checked = find_issues(frame, settings, {}, "lr", 10.0, 42)
    audit_s = time.perf_counter() - t
    load_after = os.getloadavg()[0]
    kept = frame[~frame["text_key"].isin(flagged["text_key"])]
    print(f"""## Teacher audit (cleanlab)

Command: `.venv/bin/python bench/label_audit.py --folds {args.folds} --feedback-error {args.feedback_error}`
(CLINC150 train + val in the simulation's cut: {len(frame):,} ground-truth rows, {checked:,} of them audited;
150 intents; load average {load_before:.1f} before, {load_after:.1f} after).

| source | rows | wrong | flagged | precision | recall | wrong-label rate left for training |
|---|---:|---:|---:|---:|---:|---:|
{_row(frame, flagged, "auto-approved")}
{_row(frame, flagged, "feedback")}

- All ground truth: wrong-label rate {(frame["label"] != frame["true"]).mean():.2%} before the audit,
  {(kept["label"] != kept["true"]).mean():.2%} after leaving the flagged rows out.
- Cost: the audit ({args.folds} folds: featurise once, fit {args.folds}×, cleanlab) {audit_s:.1f} s; anchor, one
  featurise + fit of the same rows (what a training pays anyway) {anchor_s:.1f} s: {audit_s / anchor_s:.2f}×.
""")


if __name__ == "__main__":
    main()
