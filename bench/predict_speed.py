"""One-text prediction cost of the Router's lean path against sklearn's predict_proba in the same run.

    .venv/bin/python bench/predict_speed.py

Fits the shipped pipeline on CLINC150, then times: `Router.predict_one` (the serving path), one-text
`pipeline.predict_proba` (the anchor), and batches of 16 / 256 through the pipeline. Prints markdown.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from intelrouter.classifiers import make_classifier
from intelrouter.features import TextFeatures
from intelrouter.model import Router, make_pipeline

REPO = Path(__file__).resolve().parents[1]

CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "clinc150_full.csv"


def per_text_us(fn, texts: list[str], repeat: int = 3) -> float:  # noqa: ANN001
    """Best-of-`repeat` mean microseconds per text of fn(text)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for text in texts:
            fn(text)
        best = min(best, (time.perf_counter() - t0) / len(texts))
    return best * 1e6


def batch_texts_per_s(predict_proba, texts: list[str], size: int) -> float:  # noqa: ANN001
    """Texts per second through predict_proba in batches of `size`."""
    t0 = time.perf_counter()
    for i in range(0, len(texts), size):
        predict_proba(texts[i : i + size])
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    """Fit, check the two paths agree, time them, print the markdown block."""
    frame = pd.read_csv(CLINC)
    train = frame[(frame["split"] == "train") & (frame["label"] != "oos")]
    test = frame[frame["split"] == "test"]["text"].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(TextFeatures(), make_classifier("lr")).fit(train["text"].tolist(), train["label"])
    router = Router(pipe, 0.6)
    sample = test[:2000]
    # the anchor is sklearn's own pipeline (Router.predict_proba runs the lean path too, so it is no anchor);
    # its float32 features are summed in another order, hence the tolerance
    agree = np.allclose(router.predict_proba(sample[:500]), pipe.predict_proba(sample[:500]), rtol=1e-4, atol=1e-5)
    lean = per_text_us(router.predict_one, sample)
    anchor = per_text_us(lambda t: pipe.predict_proba([t]), sample[:300])
    b16 = batch_texts_per_s(pipe.predict_proba, test, 16)
    b256 = batch_texts_per_s(pipe.predict_proba, test, 256)
    print("| path | µs per text | texts/s |\n|---|---:|---:|")
    print(f"| anchor: sklearn `pipeline.predict_proba([text])` | {anchor:,.0f} | {1e6 / anchor:,.0f} |")
    print(f"| `Router.predict_one(text)` (lean, serving path) | {lean:,.0f} | {1e6 / lean:,.0f} |")
    print(f"| sklearn `pipeline.predict_proba`, batches of 16 | {1e6 / b16:,.0f} | {b16:,.0f} |")
    print(f"| sklearn `pipeline.predict_proba`, batches of 256 | {1e6 / b256:,.0f} | {b256:,.0f} |")
    print(f"\n**Lean one-text path: {anchor / lean:.1f}× faster than the anchor**; probabilities agree with the "
          f"pipeline on 500 test texts: {agree}. {router.features.n_features_out_} features, "
          f"{len(router.labels)} labels.")


if __name__ == "__main__":
    main()
