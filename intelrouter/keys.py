"""Stable keys: de-duplication digests, the key of a text (its normalised words), and a [0, 1) bucket of a key."""

from __future__ import annotations

import hashlib
from typing import Any

from intelrouter.text import normalise, words_of


def digest(*parts: Any) -> str:
    """A stable hex key for de-duplication."""
    return hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()


def text_key(text: str) -> str:
    """The key of a text: equal for texts that differ only in case, spacing, Unicode form or punctuation."""
    return digest("text", " ".join(words_of(normalise(text))))


def bucket(key: str) -> float:
    """A stable number in [0, 1) for a key: the same key always lands in the same place."""
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}


def split_of(key: str, test_share: float, val_share: float) -> str:
    """The permanent split of a text key: `test` for the first `test_share` of buckets, then `val`, then `train`."""
    b = bucket("split:" + key)
    return "test" if b < test_share else "val" if b < test_share + val_share else "train"


def known_split(value: str | None) -> str | None:
    """A split name as the store keeps it (validation and dev are val), or None when it is not one."""
    return _SPLIT_NAMES.get(str(value).strip().lower()) if value else None
