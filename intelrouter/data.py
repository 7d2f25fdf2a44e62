"""Ground truth for training: load approved rows (from `ml_data` or a JSONL export), clean, digest and split.

Every row has a permanent split (train / val / test), drawn once from the key of its text when it entered
`ml_data` (see `groundtruth`), so no version is ever scored on rows an earlier version trained on. Copies of a
question (one row per query that asked it) count once: training must not weight a text by how often it was
asked. Out-of-scope rows (the `oos_label` setting) are never a class: in train or val they choose the threshold,
in test they measure out-of-scope recall.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import InputError
from intelrouter.jsonfiles import iter_objects
from intelrouter.keys import known_split, split_of, text_key
from intelrouter.names import SOURCE_PRECEDENCE

COLUMNS = ["id", "text", "label", "created_at", "split", "language", "source", "text_key"]


@dataclass
class Splits:
    """Train rows (in-scope only), validation rows (threshold, calibration) and test rows."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    how: str


def load_examples(settings: Settings, source: str = "db") -> tuple[pd.DataFrame, str]:
    """Ground-truth rows (id, text, label, created_at, split, language, source) and a description of where from."""
    if source == "db":
        t = store.ml_data
        with store.connect(settings) as conn:
            rows = conn.execute(select(*(t.c[c] for c in COLUMNS)).order_by(t.c.id)).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows], columns=COLUMNS)

        return _clean(frame), f"ml_data@{store.safe_url(settings)}"
    return _clean(_read_jsonl(Path(source))), str(Path(source).resolve())


def _read_jsonl(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: no such file (the training source is `db` or a JSONL export)")
    records = []
    for lineno, obj in iter_objects(path, suffix=""):
        if "text" not in obj or "label" not in obj:
            raise InputError(f"{path}:{lineno}: each line needs a JSON object with `text` and `label`")
        try:
            created = store.parse_when(obj.get("created_at"), "created_at")
        except InputError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
        records.append({c: obj.get(c) for c in COLUMNS} | {"created_at": created})
    return pd.DataFrame(records, columns=COLUMNS)


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["text"] = frame["text"].astype("string").fillna("")
    frame["label"] = frame["label"].astype("string").fillna("").str.strip()
    frame = frame[(frame["text"].str.strip() != "") & (frame["label"] != "")].copy()
    frame["split"] = [known_split(v) for v in frame["split"].astype("object").where(frame["split"].notna(), None)]
    keys = frame["text_key"].astype("object")
    frame["text_key"] = [k if isinstance(k, str) and k else text_key(t) for k, t in zip(keys, frame["text"],
                                                                                          strict=True)]
    frame["created_at"] = pd.to_datetime(frame["created_at"], errors="coerce")
    return frame.reset_index(drop=True)


def collapse_copies(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per text key: the label of the highest-precedence source, the newest among equals; (rows, dropped)."""
    if frame.empty:
        return frame, 0
    rank = frame["source"].map(SOURCE_PRECEDENCE).fillna(-1)
    order = frame.assign(_rank=rank).sort_values(["_rank", "created_at", "id"], na_position="first", kind="stable")
    kept = order.drop_duplicates("text_key", keep="last").drop(columns="_rank")
    return kept.sort_index().reset_index(drop=True), len(frame) - len(kept)


def data_digest(frame: pd.DataFrame) -> str:
    """A SHA-256 over the rows' ids, texts, labels and splits (order-independent)."""
    lines = sorted(
        "\x1f".join(str(v) for v in row)
        for row in frame[["id", "text", "label", "split"]].astype("string").fillna("").itertuples(index=False)
    )
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def _stratified_take(frame: pd.DataFrame, share: float, rng: np.random.Generator) -> np.ndarray:
    """Row mask of a stratified sample: about `share` of each label, never all of a label's rows."""
    take = np.zeros(len(frame), dtype=bool)
    for _, positions in frame.groupby("label", sort=True).indices.items():
        n = len(positions)
        k = min(max(int(round(n * share)), 1), n - 1) if n >= 2 else 0
        if k:
            take[rng.permutation(positions)[:k]] = True
    return take


def split_examples(frame: pd.DataFrame, oos_label: str, shares: tuple[float, float], random_state: int) -> Splits:
    """Train, validation and test rows by each row's permanent split (drawn from its text key with `shares` when a
    row has none, e.g. a hand-made JSONL file); validation and test are carved from train only when none exist."""
    rng = np.random.default_rng(random_state)
    is_oos = (frame["label"] == oos_label).to_numpy()
    split = np.array([s or split_of(k, *shares) for s, k in zip(frame["split"], frame["text_key"], strict=True)],
                     dtype=object)
    test_mask = split == "test"
    val_mask = (split == "val") | (is_oos & ~test_mask)  # out-of-scope rows are never trained on
    train_mask = ~(val_mask | test_mask)
    how = "permanent splits"
    if not test_mask.any():
        how += ", test carved from train"
        test_mask = carve(frame, train_mask, shares[0], rng)
        train_mask &= ~test_mask
    if not (val_mask & ~is_oos).any():
        how += ", validation carved from train"
        carved = carve(frame, train_mask, shares[1], rng)
        val_mask |= carved
        train_mask &= ~carved
    return Splits(frame[train_mask].reset_index(drop=True), frame[val_mask].reset_index(drop=True),
                  frame[test_mask].reset_index(drop=True), how)


def carve(frame: pd.DataFrame, mask: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Row mask of a stratified `share` of the rows under `mask` (about `share` of each label)."""
    out = np.zeros(len(frame), dtype=bool)
    pos = np.flatnonzero(mask)
    out[pos[_stratified_take(frame.iloc[pos], share, rng)]] = True
    return out


def recent_mask(frame: pd.DataFrame, days: int) -> np.ndarray:
    """Rows created within the last `days` days (naive UTC)."""
    since = pd.Timestamp(store.utcnow() - timedelta(days=days))
    return (frame["created_at"] >= since).fillna(False).to_numpy(dtype=bool)

