"""The simulation's data: a labelled dataset cut into disjoint parts, and a day of traffic drawn from one of them.

Parts: a small seed set (the first labelled data), a part that trains the teacher, a traffic pool, and a fixed
held-out set (the dataset's test split) that nothing but the evaluation ever sees. Traffic repeats the way real
traffic does: texts drawn with a Zipf-like popularity, so the same question arrives many times, with small
variations of case, spacing and punctuation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from intelrouter.benchmark import DATASETS_DIR
from intelrouter.errors import InputError
from intelrouter.keys import known_split

NAMED = ("clinc150", "banking77")


@dataclass
class Parts:
    """Disjoint parts of a dataset (text, label): seed, teacher, traffic pool, held-out."""

    name: str
    seed: pd.DataFrame
    teacher: pd.DataFrame
    traffic: pd.DataFrame
    heldout: pd.DataFrame
    oos_label: str | None  # the out-of-scope label when the data has one (CLINC150's `oos`)

    def sizes(self) -> dict[str, int]:
        """Rows per part."""
        return {"seed": len(self.seed), "teacher": len(self.teacher), "traffic": len(self.traffic),
                "heldout": len(self.heldout)}


@dataclass(frozen=True)
class Query:
    """One simulated user query: when, what (as typed), who, and the true label (known from the dataset)."""

    at: datetime
    text: str
    user_id: str
    truth: str
    pool_index: int


def load(dataset: str, datasets_dir: Path = DATASETS_DIR) -> tuple[str, pd.DataFrame, str | None]:
    """A dataset by name (clinc150, banking77) or a CSV/JSONL file with text, label, split: (name, rows, OOS label)."""
    if dataset == "clinc150":
        path = Path(datasets_dir) / "clinc150" / "clinc150_full.csv"
        return "clinc150", _read(path), "oos"
    if dataset == "banking77":
        base = Path(datasets_dir) / "banking77"
        frames = [_read(base / f"{part}.csv", label="category", split=part) for part in ("train", "test")]
        return "banking77", pd.concat(frames, ignore_index=True), None
    path = Path(dataset)
    if not path.is_file():
        raise InputError(f"{dataset}: no such dataset: use clinc150, banking77 or a CSV/JSONL file with text, label, "
                         "split")
    frame = _read(path)
    return path.stem, frame, ("oos" if (frame["label"] == "oos").any() else None)


def _read(path: Path, label: str = "label", split: str | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: no such file (the datasets live in ../shared/datasets)")
    try:
        frame = (pd.read_json(path, lines=True, dtype=False) if path.suffix in (".jsonl", ".json")
                 else pd.read_csv(path, keep_default_na=False, dtype=str))
    except ValueError as exc:
        raise InputError(f"{path}: cannot read it: {str(exc).splitlines()[0]}") from None
    frame = frame.rename(columns={label: "label"})
    if split is not None:
        frame["split"] = split
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise InputError(f"{path}: needs the columns text, label and split (missing {', '.join(sorted(missing))})")
    if "split" not in frame.columns:
        raise InputError(f"{path}: needs a split column (train/val/test): the test rows are the held-out set")
    frame = frame.astype({"text": str, "label": str, "split": str})
    frame["split"] = [known_split(s) for s in frame["split"]]
    return frame[frame["text"].str.strip() != ""].reset_index(drop=True)


def cut(name: str, frame: pd.DataFrame, oos_label: str | None, seed_per_label: int = 10,
        teacher_share: float = 0.5, random_state: int = 0) -> Parts:
    """Held-out = the test split; of the rest, per label: `seed_per_label` rows to the seed set, then
    `teacher_share` of what is left to the teacher and the remainder to the traffic pool."""
    heldout = frame[frame["split"] == "test"]
    rest = frame[frame["split"].isin(["train", "val"])]
    if heldout.empty or rest.empty:
        raise InputError(f"{name}: needs rows with split test (the held-out set) and train/val rows")
    rng = np.random.default_rng(random_state)
    seed, teacher, traffic = [], [], []
    for _, rows in rest.groupby("label", sort=True):
        rows = rows.iloc[rng.permutation(len(rows))]
        n_seed = min(seed_per_label, max(len(rows) - 2, 0))
        n_teacher = int(round((len(rows) - n_seed) * teacher_share))
        seed.append(rows.iloc[:n_seed])
        teacher.append(rows.iloc[n_seed:n_seed + n_teacher])
        traffic.append(rows.iloc[n_seed + n_teacher:])
    cols = ["text", "label"]
    parts = [pd.concat(p)[cols].reset_index(drop=True) for p in (seed, teacher, traffic)]
    return Parts(name, *parts, heldout[cols].reset_index(drop=True), oos_label)


def vary(text: str, rng: np.random.Generator) -> str:
    """The same question typed a little differently: case, spacing, a trailing mark (the text key stays the same)."""
    roll = rng.random()
    if roll < 0.15:
        text = text.upper() if rng.random() < 0.3 else text.capitalize()
    elif roll < 0.3:
        text = text.title()
    if rng.random() < 0.2:
        words = text.split(" ")
        i = int(rng.integers(0, len(words)))
        words[i] += " "
        text = " ".join(words)
    if rng.random() < 0.25:
        text = text.rstrip("?!. ") + str(rng.choice(["?", "!", "??", " ?", "."]))
    return text


class Traffic:
    """Days of queries from the traffic pool: Zipf-like popularity over the pool, users drawn from a user pool."""

    def __init__(self, pool: pd.DataFrame, per_day: int, start: datetime, zipf: float = 1.0, users: int = 2000,
                 random_state: int = 0) -> None:
        self.pool, self.per_day, self.start = pool.reset_index(drop=True), per_day, start
        self.random_state, self.users = random_state, users
        order = np.random.default_rng(random_state).permutation(len(self.pool))  # popularity rank of each text
        weights = 1.0 / np.power(np.arange(1, len(order) + 1, dtype=np.float64), zipf)
        self.p = np.empty(len(order))
        self.p[order] = weights / weights.sum()

    def day(self, d: int) -> list[Query]:
        """The queries of day `d` (0-based), in time order; the same day always draws the same queries."""
        rng = np.random.default_rng([self.random_state, d])
        picks = rng.choice(len(self.pool), size=self.per_day, p=self.p)
        seconds = np.sort(rng.uniform(0, 86400, size=self.per_day))
        day_start = self.start + timedelta(days=d)
        texts, labels = self.pool["text"].to_numpy(), self.pool["label"].to_numpy()
        return [Query(day_start + timedelta(seconds=float(s)), vary(str(texts[i]), rng),
                      f"user-{int(rng.integers(0, self.users))}", str(labels[i]), int(i))
                for i, s in zip(picks, seconds, strict=True)]
