"""Shadow replay speed: the training job's shadow step on 50 000 captured queries against its anchor.

    .venv/bin/python bench/shadow_speed.py [--rows 50000] [--rounds 3] [--canary-share 0.1] [--core N]
                                           [--database-url URL]

Fits two CLINC150 routers through `train.fit_router` (production on 80 % of the in-scope train split, the
candidate on all of it; both calibrated on val), builds `--rows` distinct queries (CLINC150 and BANKING77
texts, then pairs of CLINC150 texts joined by "and") and logs them to a fresh store (a SQLite file, or
`--database-url`) as the last six days of traffic: `--canary-share` of them answered by a canary (so
@production must score those itself), the rest by @production with its own answers. Then times, in
interleaved rounds, each on freshly unpickled routers (cold per-word caches, as after a model load): the
anchor — production.predict_proba on all texts in one call — the replay of both routers on every text
(`shadow.replay`), and the wired step the training job runs (`rollout.shadow`: read the window from the
store, score the candidate, take @production's answers from the log and score it on the canary's rows only,
compare, apply the limits), with its store read alone beside it. Single-threaded; `--core` pins the process
to one core. Prints a markdown block.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from intelrouter import store  # noqa: E402
from intelrouter.capture import log_queries  # noqa: E402
from intelrouter.config import Settings, load_settings  # noqa: E402
from intelrouter.model import Router  # noqa: E402
from intelrouter.rollout import recent_traffic, shadow  # noqa: E402
from intelrouter.shadow import answers, replay  # noqa: E402
from intelrouter.train import TrainOptions, fit_router, make_features  # noqa: E402

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


def log_traffic(settings: Settings, texts: list[str], production: Router, canary: Router, share: float) -> int:
    """Log the texts as six days of traffic: a `share` answered by the canary (v2), the rest by @production (v1)."""
    now = store.utcnow()
    on_canary = np.random.default_rng(1).random(len(texts)) < share
    prod, cand = answers(production, texts), answers(canary, texts)
    rows = []
    for i, text in enumerate(texts):
        a, version, variant = (cand, "2", "staging") if on_canary[i] else (prod, "1", "production")
        label = str(a.labels[i])
        rows.append({"id": f"q{i}", "text": text, "predicted_label": label, "top_label": label,
                     "confidence": float(a.confidences[i]), "uncertain": label == "UNCERTAIN",
                     "model_version": version, "variant": variant,
                     "created_at": now - timedelta(seconds=6 * 86400 * i / len(texts))})
    log_queries(settings, rows)
    return int(on_canary.sum())


def main() -> None:
    """Fit, log the traffic, check, time in interleaved rounds, print the markdown block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--canary-share", type=float, default=0.1)
    parser.add_argument("--core", type=int, default=None, help="pin the process to this core")
    parser.add_argument("--database-url", default=None, help="the store (default: a fresh SQLite file)")
    args = parser.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    tmp = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    settings = load_settings(classifier="lr", static_features="", ambiguity_margin=0.0, data_dir=tmp,
                             database_url=args.database_url, shadow_max_queries=args.rows)
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    train = frame[(frame["split"] == "train") & (frame["label"] != "oos")]
    val = frame[frame["split"] == "val"]
    options = TrainOptions()
    production, _ = fit_router(train.sample(frac=0.8, random_state=1), val, make_features(settings, options),
                               options, settings)
    candidate, _ = fit_router(train, val, make_features(settings, options), options, settings)
    prod_blob, cand_blob = pickle.dumps(production), pickle.dumps(candidate)
    texts = queries(args.rows)
    check = texts[:2000]
    assert answers(production, check).labels.tolist() == [p.label for p in production.predict(check)]
    on_canary = log_traffic(settings, texts, production, candidate, args.canary_share)
    wired_check = shadow(settings, fresh(cand_blob), "1", production=lambda: fresh(prod_blob))
    newest_first = recent_traffic(settings, "1").texts
    assert wired_check.report == replay(candidate, production, newest_first)  # the log holds production's answers

    times: dict[str, list[tuple[float, float]]] = {"anchor": [], "pair": [], "wired": [], "read": []}
    for r in range(args.rounds):
        order = ["anchor", "pair", "wired", "read"] if r % 2 == 0 else ["read", "wired", "pair", "anchor"]
        for name in order:
            p, c = fresh(prod_blob), fresh(cand_blob)
            if name == "anchor":
                times[name].append(seconds(lambda p=p: p.predict_proba(texts)))
            elif name == "pair":
                times[name].append(seconds(lambda p=p, c=c: replay(c, p, texts)))
            elif name == "wired":
                times[name].append(seconds(lambda p=p, c=c: shadow(settings, c, "1", production=lambda: p)))
            else:
                times[name].append(seconds(lambda: recent_traffic(settings, "1")))
    report = wired_check.report
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    n = len(texts)
    print(f"Shadow replay of {n:,} distinct queries ({on_canary:,} answered by a canary, the rest by @production), "
          f"CLINC150 routers ({len(production.labels)} labels, {production.features.n_features_out_:,} features), "
          f"store {store.safe_url(settings).split(':')[0]}, median of {args.rounds} interleaved rounds, cold caches"
          f"{'' if args.core is None else f', pinned to core {args.core}'}, load average {os.getloadavg()[0]:.1f} "
          "at the end:\n")
    print("| path | CPU s | wall s (min-max) | CPU µs per query | ratio to anchor (CPU) |\n|---|---:|---:|---:|---:|")
    rows = [("anchor: `production.predict_proba(texts)`", "anchor"),
            ("`shadow.replay(candidate, production, texts)` (both routers on every text)", "pair"),
            ("`rollout.shadow(...)`: the training job's step (store read, candidate, production on the canary's "
             "rows, compare, limits)", "wired"),
            ("… of which the store read (`rollout.recent_traffic`)", "read")]
    for label, key in rows:
        walls = [t[0] for t in times[key]]
        print(f"| {label} | {cpu[key]:.2f} | {wall[key]:.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
              f"{cpu[key] / n * 1e6:,.0f} | {cpu[key] / cpu['anchor']:.2f}× |")
    print(f"\nGoal: ≤ 10 s — the wired step **{wall['wired']:.1f} s wall, {cpu['wired']:.1f} CPU s** "
          f"(both routers on every text: {wall['pair']:.1f} s). Verdict {wired_check.status}; agreement "
          f"{report.agreement:.1%}, UNCERTAIN {report.production_uncertain_rate:.1%} → "
          f"{report.candidate_uncertain_rate:.1%}, estimated accuracy {report.production_estimate:.1%} → "
          f"{report.candidate_estimate:.1%}.")
    store.dispose_engines()


if __name__ == "__main__":
    main()
