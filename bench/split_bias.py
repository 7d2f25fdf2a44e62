"""The gate's view of @production with permanent splits against the old re-drawn split, in the same run.

Before issue 15, every training re-drew its test split from all of ml_data (stratified 20 %, seed 42), so the rows
the gate scored @production on included rows @production had trained on. This benchmark replays that on
BANKING77: versions trained on a growing share of its train split (4 000, 6 000, 8 000, 10 003 rows), each gated
against the last version that passed, once with permanent splits (drawn from each text's key, as ml_data now
keeps them) and once with the old re-drawn split (the anchor). For each retrain it reports how much better
@production looks on the gate's rows than on BANKING77's test split (which no version ever trains on: the truth),
the gate's decision, and whether that decision was wrong (a rejected candidate that is better on the truth).

    .venv/bin/python bench/split_bias.py            # ≈ 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from intelrouter.config import load_settings, telemetry_off
from intelrouter.data import split_examples
from intelrouter.evaluate import compare, score
from intelrouter.keys import text_key
from intelrouter.train import TrainOptions, fit_router, make_features
from simulation.data import load

SIZES = (4000, 6000, 8000, 10003)


def redrawn(frame: pd.DataFrame, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The old split: a stratified 20 % test drawn anew from all rows at every training, then 10 % validation."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(frame), dtype=bool)
    val = np.zeros(len(frame), dtype=bool)
    for _, pos in frame.groupby("label", sort=True).indices.items():
        order = rng.permutation(pos)
        k = min(max(round(len(pos) * 0.2), 1), len(pos) - 1)
        test[order[:k]] = True
        v = min(max(round((len(pos) - k) * 0.2), 1), len(pos) - k - 1)
        val[order[k:k + v]] = True
    return frame[~(test | val)], frame[val], frame[test]


def permanent(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Today's split: each row's permanent split, drawn from its text key with the default shares."""
    keyed = frame.assign(id=range(len(frame)), created_at=pd.NaT, source="import", split=None,
                         text_key=[text_key(t) for t in frame["text"]])
    splits = split_examples(keyed, "oos", (0.2, 0.1), 42)
    return splits.train, splits.val, splits.test


def main() -> None:
    """Train the growing versions under both splits and print the markdown table."""
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    telemetry_off()
    settings = load_settings()
    _, frame, _ = load("banking77")
    pool = frame[frame["split"] == "train"].sample(frac=1.0, random_state=0).reset_index(drop=True)
    truth = frame[frame["split"] == "test"].reset_index(drop=True)
    options = TrainOptions()
    rows, started = [], time.perf_counter()
    for method, split in (("re-drawn (before)", redrawn), ("permanent (now)", permanent)):
        production = None
        for n in SIZES:
            train, val, test = split(pool.iloc[:n])
            router, _ = fit_router(train, val, make_features(settings, options), options, settings)
            accuracy = float(score(router, truth).correct.mean())
            if production is None:
                production = (router, accuracy, n)
                continue
            prod_router, prod_truth, prod_n = production
            comparison = compare(router, prod_router, test, np.zeros(len(test), dtype=bool), settings)
            seen = float(comparison.baseline.correct.mean())
            passed = comparison.decision.passed
            rows.append({"method": method, "production": prod_n, "candidate": n, "prod_on_gate_rows": seen,
                         "prod_on_truth": prod_truth, "inflation": seen - prod_truth,
                         "cand_on_gate_rows": float(comparison.candidate.correct.mean()), "cand_on_truth": accuracy,
                         "passed": passed, "wrong": (not passed and accuracy > prod_truth) or
                         (passed and accuracy < prod_truth - settings.gate_tolerance)})
            if passed:
                production = (router, accuracy, n)
    print(f"`.venv/bin/python bench/split_bias.py` ({time.perf_counter() - started:.0f} s); BANKING77, versions on "
          f"{', '.join(map(str, SIZES))} train rows, each gated against the last version that passed.\n")
    print("| split | @production (rows) | candidate (rows) | @production on the gate's rows | @production on the "
          "truth | inflation | candidate on gate / truth | gate | decision right |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['production']} | {r['candidate']} | {r['prod_on_gate_rows']:.2%} | "
              f"{r['prod_on_truth']:.2%} | {r['inflation']:+.2%} | {r['cand_on_gate_rows']:.2%} / "
              f"{r['cand_on_truth']:.2%} | {'passed' if r['passed'] else 'rejected'} | "
              f"{'WRONG' if r['wrong'] else 'right'} |")
    for method in ("re-drawn (before)", "permanent (now)"):
        wrong = sum(r["wrong"] for r in rows if r["method"] == method)
        print(f"\n- {method}: {wrong} wrong gate decision(s) of {sum(r['method'] == method for r in rows)}")


if __name__ == "__main__":
    main()
