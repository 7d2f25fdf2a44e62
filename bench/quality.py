"""Model quality on public intent benchmarks (issue 7), through the production training path.

Runs `intelrouter.benchmark` (the code behind `intelrouter benchmark`) for each dataset and classifier and prints
a markdown block for BENCHMARKS.md. The anchor is the shipped configuration (`lr`), measured in the same run;
other rows give their difference to it. Nothing is tuned on a test split.

    .venv/bin/python bench/quality.py                                   # CLINC150, BANKING77, held-out sets
    .venv/bin/python bench/quality.py --datasets clinc150 --classifiers lr,svc,ens
    .venv/bin/python bench/quality.py --classifiers lr,mb+static      # NAME+static: with the static MiniLM block
"""

from __future__ import annotations

import argparse
import os
import warnings

from intelrouter import benchmark
from intelrouter.config import load_settings, telemetry_off
from intelrouter.train import TrainOptions

telemetry_off()

STATIC = "mean3-pca256-zipf"  # the static variant `+static` adds (intelrouter/static.py)


def main() -> None:
    """Run the benchmarks and print the markdown block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="clinc150,banking77,clinc150-small,clinc150-imbalanced")
    parser.add_argument("--classifiers", default="lr,svc,ens")
    parser.add_argument("--C", type=float, default=10.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    settings = load_settings()
    print(f"load average before: {os.getloadavg()[0]:.2f}\n")
    print("| dataset | classifier | validation accuracy | accuracy (argmax) | in-scope acc / OOS recall (accuracy "
          "rule) | in-scope acc / OOS recall (balanced) | ECE test | featurise s | fit s | MB | predict_one µs | "
          "batch-256 µs/text | load avg | Δ accuracy vs anchor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    details = []
    for name in args.datasets.split(","):
        data = benchmark.load(name)
        anchor = None
        for clf in args.classifiers.split(","):
            name_, _, extra = clf.partition("+")
            features = {"static": STATIC} if extra == "static" else {}
            r = benchmark.run(data, settings, TrainOptions(classifier=name_, C=args.C, features=features))
            anchor = anchor if anchor is not None else r.accuracy
            pol = {row["policy"]: row for row in r.rows_by_policy}

            def pair(p: str, pol: dict = pol) -> str:
                row = pol[p]
                return "–" if row["oos_recall"] is None else f"{row['inscope_accuracy']:.2%} / {row['oos_recall']:.2%}"

            tag = "anchor (shipped)" if r.accuracy == anchor and clf == args.classifiers.split(",")[0] else \
                f"{(r.accuracy - anchor) * 100:+.2f} pts"
            print(f"| {r.dataset} | {clf} | {r.val_accuracy:.2%} | {r.accuracy:.2%} | {pair('accuracy')} | "
                  f"{pair('balanced')} | {r.ece:.4f} | {r.timings['featurise_s']:.2f} | {r.timings['fit_s']:.2f} | "
                  f"{r.size_bytes / 1e6:.1f} | {r.one_text_us:.0f} | {r.batch256_us:.0f} | "
                  f"{r.timings.get('load_1min', 0):.2f} | {tag} |", flush=True)
            details.append(benchmark.to_markdown(r))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")
    print("\n\n".join(details))


if __name__ == "__main__":
    main()
