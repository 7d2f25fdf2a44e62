"""The one text form every feature, key and group starts from: normalised text and its word tokens."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

import numpy as np

TOKEN_PATTERN = r"(?u)\b\w+\b"
TOKEN_RE = re.compile(TOKEN_PATTERN)


def normalise(text: str) -> str:
    """NFKC-fold, lower-case and collapse whitespace: the one text form every feature starts from."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def words_of(norm: str) -> list[str]:
    """The word tokens (TOKEN_PATTERN) of a normalised text; a text of letters, digits and spaces is just split."""
    return norm.split() if norm.replace(" ", "").isalnum() else TOKEN_RE.findall(norm)


def as_texts(x: Any) -> list[str]:
    """Accept a DataFrame with a `text` column, a Series, a 2-D array or a sequence; missing values become ''."""
    if hasattr(x, "columns"):
        if "text" not in x.columns:
            raise ValueError("input must have a 'text' column")
        x = x["text"]
    elif isinstance(x, np.ndarray) and x.ndim == 2:
        x = x[:, 0]
    elif isinstance(x, str):
        x = [x]
    return [v if isinstance(v, str) else ("" if v is None or _is_nan(v) else str(v)) for v in x]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
