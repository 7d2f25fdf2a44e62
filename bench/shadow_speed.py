"""Shadow replay speed: `shadow.replay` of 50 000 queries against its anchor, @production's own `predict_proba`.

    .venv/bin/python bench/shadow_speed.py [--rows 50000] [--rounds 3] [--core N]

Fits two CLINC150 routers through `train.fit_router` (production on 80 % of the in-scope train split, the
candidate on all of it; both calibrated on val), builds `--rows` distinct queries (CLINC150 and BANKING77
texts, then pairs of CLINC150 texts joined by "and"), and times, in interleaved rounds, each on freshly
unpickled routers (cold per-word caches, as after a model load): the anchor — production.predict_proba on
all texts in one call — the replay of both routers, and the replay of the candidate alone against
production's answers as the query log holds them. Single-threaded; `--core` pins the process to one core.
Prints a markdown block.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from intelrouter.config import load_settings  # noqa: E402
from intelrouter.model import Router  # noqa: E402
from intelrouter.shadow import answers, compare, replay  # noqa: E402
from intelrouter.train import TrainOptions, fit_router  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"


def queries(rows: int) -> list[str]:
    """`rows` distinct query texts: CLINC150 and BANKING77, then pairs of CLINC150 texts."""
    clinc = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")["text"].tolist()
    banking = pd.read_csv(DATASETS / "banking77" / "banking77.csv")["text"].astype(str).tolist()
    texts = list(dict.fromkeys(clinc + banking))
    rng = np.random.default_rng(0)
    seen = set(texts)
    while len(texts) < rows:
        i, j = rng.integers(0, len(clinc), 2)
        pair = f"{clinc[i]} and {clinc[j]}"
        if pair not in seen:
            seen.add(pair)
            texts.append(pair)
    return texts[:rows]


def fresh(blob: bytes) -> Router:
    """A router as loaded from its artifact: no cached coefficients, no per-word caches."""
    return pickle.loads(blob)


def seconds(fn) -> tuple[float, float]:  # noqa: ANN001
    """Wall and CPU seconds of one call (CPU time is what a busy shared machine distorts least)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    """Fit, check, time in interleaved rounds, print the markdown block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--core", type=int, default=None, help="pin the process to this core")
    args = parser.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    settings = load_settings(classifier="lr", static_features="", ambiguity_margin=0.0)
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    train = frame[(frame["split"] == "train") & (frame["label"] != "oos")]
    val = frame[frame["split"] == "val"]
    production, _ = fit_router(train.sample(frac=0.8, random_state=1), val, TrainOptions(), settings)
    candidate, _ = fit_router(train, val, TrainOptions(), settings)
    prod_blob, cand_blob = pickle.dumps(production), pickle.dumps(candidate)
    texts = queries(args.rows)
    check = texts[:2000]
    assert answers(production, check).labels.tolist() == [p.label for p in production.predict(check)]
    logged = answers(production, texts)  # what the query log would hold for production's answers

    times: dict[str, list[tuple[float, float]]] = {"anchor": [], "pair": [], "candidate": []}
    for r in range(args.rounds):
        order = ["anchor", "pair", "candidate"] if r % 2 == 0 else ["candidate", "pair", "anchor"]
        for name in order:
            p, c = fresh(prod_blob), fresh(cand_blob)
            if name == "anchor":
                times[name].append(seconds(lambda p=p: p.predict_proba(texts)))
            elif name == "pair":
                times[name].append(seconds(lambda p=p, c=c: replay(c, p, texts)))
            else:
                times[name].append(seconds(lambda c=c: compare(answers(c, texts), logged)))
    report = replay(candidate, production, texts)
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    n = len(texts)
    print(f"Shadow replay of {n:,} distinct queries, CLINC150 routers ({len(production.labels)} labels, "
          f"{production.features.n_features_out_:,} features), median of {args.rounds} interleaved rounds, "
          f"cold caches{'' if args.core is None else f', pinned to core {args.core}'}, load average "
          f"{os.getloadavg()[0]:.1f} at the end:\n")
    print("| path | CPU s | wall s (min-max) | CPU µs per query | ratio to anchor (CPU) |\n|---|---:|---:|---:|---:|")
    rows = [("anchor: `production.predict_proba(texts)`", "anchor"),
            ("`shadow.replay(candidate, production, texts)` (both routers)", "pair"),
            ("`shadow.compare(answers(candidate, texts), logged)` (production from the query log)", "candidate")]
    for label, key in rows:
        walls = [t[0] for t in times[key]]
        print(f"| {label} | {cpu[key]:.2f} | {wall[key]:.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
              f"{cpu[key] / n * 1e6:,.0f} | {cpu[key] / cpu['anchor']:.2f}× |")
    print(f"\nGoal: ≤ 10 s for the pair — **{cpu['pair']:.1f} CPU s, {wall['pair']:.1f} s wall**. Agreement "
          f"{report.agreement:.1%}, UNCERTAIN {report.production_uncertain_rate:.1%} → "
          f"{report.candidate_uncertain_rate:.1%}, estimated accuracy {report.production_estimate:.1%} → "
          f"{report.candidate_estimate:.1%}.")


if __name__ == "__main__":
    main()
