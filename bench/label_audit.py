"""Bench: the teacher audit on CLINC150 — a real teacher's real errors, what the audit catches, what it costs.

Run: .venv/bin/python bench/label_audit.py [--teacher-share 0.3] [--folds 3]
A teacher (the product's pipeline: TextFeatures + the `lr` classifier) is fitted on a share of CLINC150's in-scope
`train` rows (those rows stay as imported ground truth); it labels the other train and val rows, and its most
confident 70 % become "auto-approved" ground truth, its mistakes as they come (no synthetic flips). The audit
(`intelrouter.audit.find_issues`, the code training runs) then checks them. Anchor, same run, same rows: one
featurise + fit of the pipeline, what a training pays anyway. Prints a markdown block.
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


def world(teacher_share: float, seed: int = 0) -> pd.DataFrame:
    """Imported rows (the teacher's own) and the teacher's confident answers on the rest, with the true labels."""
    data = json.loads(DATASET.read_text())
    rows = pd.DataFrame(data["train"] + data["val"], columns=["text", "true"])
    rng = np.random.default_rng(seed)
    own = rng.random(len(rows)) < teacher_share
    teacher = make_classifier("lr")
    features = TextFeatures()
    teacher.fit(features.fit_transform(rows.loc[own, "text"].tolist()), rows.loc[own, "true"].to_numpy())
    probs = teacher.predict_proba(features.transform(rows.loc[~own, "text"].tolist()))
    answered = rows[~own].assign(label=teacher.classes_[probs.argmax(axis=1)], confidence=probs.max(axis=1))
    confident = answered[answered["confidence"] >= answered["confidence"].quantile(0.3)]
    frame = pd.concat([rows[own].assign(label=rows.loc[own, "true"], source="import"),
                       confident.assign(source="auto-approved")], ignore_index=True)
    frame["id"] = range(len(frame))
    frame["text_key"] = [text_key(t) for t in frame["text"]]
    return frame.drop_duplicates("text_key").reset_index(drop=True)


def _wrong(frame: pd.DataFrame) -> float:
    return float((frame["label"] != frame["true"]).mean())


def main() -> None:
    """Run the bench and print the markdown block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-share", type=float, default=0.3)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args()
    frame = world(args.teacher_share)
    settings = load_settings(audit_folds=args.folds)
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    TextFeatures().fit_transform(frame["text"].tolist())
    featurise_s = time.perf_counter() - t
    t = time.perf_counter()
    x = TextFeatures().fit_transform(frame["text"].tolist())
    make_classifier("lr").fit(x, frame["label"].to_numpy(dtype=object))
    anchor_s = time.perf_counter() - t
    t = time.perf_counter()
    flagged, checked = find_issues(frame, settings, {}, "lr", 10.0, 42)
    audit_s = time.perf_counter() - t
    load_after = os.getloadavg()[0]

    auto = frame[frame["source"] == "auto-approved"]
    wrong = auto["label"] != auto["true"]
    caught = flagged[flagged["label"] != flagged["true"]]
    kept = auto[~auto["text_key"].isin(flagged["text_key"])]
    wrong_after = (kept["label"] != kept["true"]).mean()
    before_all, after_all = _wrong(frame), _wrong(frame[~frame["text_key"].isin(flagged["text_key"])])
    print(f"""## Teacher audit (cleanlab)

Command: `.venv/bin/python bench/label_audit.py --teacher-share {args.teacher_share} --folds {args.folds}`
(CLINC150 train + val, {len(frame):,} distinct texts: {len(frame) - len(auto):,} imported rows the teacher was fitted
on, {len(auto):,} auto-approved answers of the teacher — its most confident 70 % — with its real mistakes;
150 intents; load average {load_before:.1f} before, {load_after:.1f} after).

| measure | value |
|---|---:|
| auto-approved rows checked | {checked:,} |
| wrong among them (the teacher's real errors) | {int(wrong.sum()):,} ({wrong.mean():.1%}) |
| flagged by the audit | {len(flagged):,} |
| precision: flagged rows that were wrong | {len(caught) / max(len(flagged), 1):.1%} |
| recall: wrong rows flagged | {len(caught) / max(int(wrong.sum()), 1):.1%} |
| wrong-label rate of the auto-approved rows left for training | {wrong.mean():.2%} → {wrong_after:.2%} \
({wrong_after / max(wrong.mean(), 1e-9):.2f}×) |
| wrong-label rate of all training rows | {before_all:.2%} → {after_all:.2%} |
| audit ({args.folds} folds: featurise once, fit {args.folds}×, cleanlab) | {audit_s:.1f} s |
| anchor: one featurise + fit of the same rows (what training pays) | {anchor_s:.1f} s (featurise {featurise_s:.1f} s) |
| audit / anchor | {audit_s / anchor_s:.2f}× |
""")


if __name__ == "__main__":
    main()
