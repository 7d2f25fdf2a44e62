"""Ground truth for training: load approved rows (from `ml_data` or a JSONL export), clean, digest and split.

Out-of-scope rows (the `oos_label` setting) are never a class: the split sends them to validation (to choose
the threshold) and to test (to measure out-of-scope recall).
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

COLUMNS = ["id", "text", "label", "created_at", "split", "language", "source"]
TRAIN_SPLITS, VAL_SPLITS, TEST_SPLITS = {"train"}, {"val", "validation", "dev"}, {"test"}


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
    frame = frame[(frame["text"].str.strip() != "") & (frame["label"] != "")]
    frame["split"] = frame["split"].astype("string").str.strip().str.lower()
    frame["created_at"] = pd.to_datetime(frame["created_at"], errors="coerce")
    return frame.reset_index(drop=True)


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


def split_examples(
    frame: pd.DataFrame, oos_label: str, test_size: float, random_state: int, need_val: bool
) -> Splits:
    """Honour a `split` column (train/val/test) when the rows carry one; otherwise split by label."""
    rng = np.random.default_rng(random_state)
    is_oos = (frame["label"] == oos_label).to_numpy()
    split = frame["split"].fillna("").to_numpy()
    if np.isin(split, list(TRAIN_SPLITS | VAL_SPLITS | TEST_SPLITS)).any():
        how = "split column"
        val_mask = np.isin(split, list(VAL_SPLITS)) | (is_oos & ~np.isin(split, list(TEST_SPLITS)))
        test_mask = np.isin(split, list(TEST_SPLITS))
        train_mask = ~(val_mask | test_mask | is_oos)
        if not test_mask.any():
            how += ", test carved from train"
            test_mask = carve(frame, train_mask, test_size, rng)
            train_mask &= ~test_mask
    else:
        how = f"stratified {test_size:g} test"
        oos_pos = np.flatnonzero(is_oos)
        test_mask = _stratified_take(frame, test_size, rng) & ~is_oos
        val_mask = np.zeros(len(frame), dtype=bool)
        # out-of-scope rows are never trained on: half choose the threshold, half measure OOS recall
        shuffled = rng.permutation(oos_pos)
        n_val = len(shuffled) // 2 if need_val else 0
        val_mask[shuffled[:n_val]] = True
        test_mask[shuffled[n_val:]] = True
        train_mask = ~(test_mask | val_mask)
    if need_val and not (val_mask & ~is_oos).any():
        how += ", validation carved from train"
        carved = carve(frame, train_mask, test_size, rng)
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

