"""Text features inside the model pipeline: normalised text, word/char TF-IDF, linguistic signals.

Training and serving run the same fitted `TextFeatures` object, so they compute the same thing.
`TextFeatures.sparse_one` is the lean single-text path: the same analyzers, vocabularies and idf
weights as `transform`, without sklearn's per-call overhead.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from intelrouter.errors import ConfigError

# Bump when the meaning of a feature changes without a parameter change: it is part of the feature set id.
FEATURE_CODE_VERSION = 1

TOKEN_PATTERN = r"(?u)\b\w+\b"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_WORDPUNCT_RE = re.compile(r"\w+|[^\w\s]+")
_SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)")
_QUESTION_WORDS = frozenset(
    "what how why when where who whom whose which can could would should is are do does did will may".split()
)
_CODE_RE = re.compile(r"`|[{}\[\];]|==|!=|->|=>|::|\b(def|class|import|return|function|select|from|print)\b|\w\(\)")
_MATH_RE = re.compile(r"\d\s*[-+*/^=<>]\s*\d|[=∑∫√π±≤≥]|\b(sqrt|log|sin|cos|integral|derivative|equation|solve)\b")

# NLTK resources an optional feature needs, and the download name that installs each.
NLTK_RESOURCES = {"pos_tags": ("taggers/averaged_perceptron_tagger_eng", "averaged_perceptron_tagger_eng")}

SIGNAL_NAMES = [
    "log_tokens",
    "log_sentences",
    "avg_word_len",
    "question_word_first",
    "question_mark",
    "has_digit",
    "digit_share",
    "code_markers",
    "math_markers",
    "upper_share",
]
POS_NAMES = ["noun_share", "verb_share", "adj_share", "wh_share"]


def normalise(text: str) -> str:
    """NFKC-fold, lower-case and collapse whitespace: the one text form every feature starts from."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


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


class StemTokenizer:
    """Word tokens (the vectorizer's default pattern) reduced to Porter stems; needs no NLTK data."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, doc: str) -> list[str]:
        """Tokenise and stem one normalised text."""
        cache = self._cache
        out = []
        for tok in _TOKEN_RE.findall(doc):
            stem = cache.get(tok)
            if stem is None:
                if len(cache) > 200_000:  # serving sees unbounded vocabularies; keep memory flat
                    cache.clear()
                stem = cache[tok] = _stemmer().stem(tok)
            out.append(stem)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._cache = {}


_STEMMER: Any = None


def _stemmer() -> Any:
    global _STEMMER
    if _STEMMER is None:
        from nltk.stem import PorterStemmer

        _STEMMER = PorterStemmer()
    return _STEMMER


def signal_values(text: str) -> list[float]:
    """Linguistic signals of one raw text, each scaled to about [0, 1] (no fitted state)."""
    norm = normalise(text)
    tokens = _WORDPUNCT_RE.findall(norm)
    words = [t for t in tokens if t[0].isalnum() or t[0] == "_"]
    n_chars = max(len(text), 1)
    sentences = len(_SENTENCE_END_RE.findall(norm)) or (1 if words else 0)
    avg_len = sum(len(w) for w in words) / len(words) if words else 0.0
    digits = sum(c.isdigit() for c in text)
    letters = [c for c in text if c.isalpha()]
    return [
        math.log1p(len(tokens)) / 5.0,
        math.log1p(sentences) / 3.0,
        min(avg_len, 20.0) / 10.0,
        1.0 if words and words[0] in _QUESTION_WORDS else 0.0,
        1.0 if "?" in text else 0.0,
        1.0 if digits else 0.0,
        digits / n_chars,
        min(len(_CODE_RE.findall(norm)), 5) / 5.0,
        min(len(_MATH_RE.findall(norm)), 5) / 5.0,
        sum(c.isupper() for c in letters) / len(letters) if letters else 0.0,
    ]


def pos_values(text: str) -> list[float]:
    """Shares of nouns, verbs, adjectives and wh-words by NLTK's POS tagger (needs its data)."""
    import nltk

    words = _TOKEN_RE.findall(normalise(text))
    if not words:
        return [0.0] * len(POS_NAMES)
    tags = [t for _, t in nltk.pos_tag(words)]
    n = len(tags)
    return [
        sum(t.startswith("NN") for t in tags) / n,
        sum(t.startswith("VB") for t in tags) / n,
        sum(t.startswith("JJ") for t in tags) / n,
        sum(t.startswith("W") for t in tags) / n,
    ]


def check_nltk_data(resources: Iterable[str]) -> None:
    """Fail with what to install when NLTK data a feature needs is missing on this machine."""
    import nltk

    for resource in resources:
        try:
            nltk.data.find(resource)
        except LookupError:
            package = next((p for r, p in NLTK_RESOURCES.values() if r == resource), resource.rsplit("/", 1)[-1])
            raise ConfigError(
                f"this model's features need the NLTK data {resource!r}, which is not on this machine: "
                f"install it with `python -m nltk.downloader {package}` (or point NLTK_DATA at a copy)"
            ) from None


class TextFeatures(TransformerMixin, BaseEstimator):
    """Word and character n-gram TF-IDF plus linguistic signals, as one sparse float matrix."""

    def __init__(
        self,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] = (2, 5),
        min_df: int = 2,
        max_word_features: int | None = None,
        max_char_features: int | None = None,
        stems: bool = True,
        signals: bool = True,
        signal_weight: float = 0.5,
        pos_tags: bool = False,
        dtype: str = "float32",
    ) -> None:
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.max_word_features = max_word_features
        self.max_char_features = max_char_features
        self.stems = stems
        self.signals = signals
        self.signal_weight = signal_weight
        self.pos_tags = pos_tags
        self.dtype = dtype

    # --- what the features are -------------------------------------------------------------------

    def required_nltk_data(self) -> list[str]:
        """NLTK resources these features need at fit and at prediction time."""
        return [NLTK_RESOURCES["pos_tags"][0]] if self.pos_tags else []

    def feature_set_id(self) -> str:
        """A readable id of the feature set: when it changes, the model's major version changes."""
        parts = [f"f{FEATURE_CODE_VERSION}"]
        if self.word_ngrams:
            parts.append(f"w{self.word_ngrams[0]}-{self.word_ngrams[1]}{'s' if self.stems else ''}")
        if self.char_ngrams:
            parts.append(f"c{self.char_ngrams[0]}-{self.char_ngrams[1]}")
        if self.min_df != 2:
            parts.append(f"df{self.min_df}")
        if self.max_word_features or self.max_char_features:
            parts.append(f"max{self.max_word_features or 0}.{self.max_char_features or 0}")
        if self.signals:
            parts.append(f"sig{self.signal_weight:g}")
        if self.pos_tags:
            parts.append("pos")
        return "+".join(parts)

    def _vectorizers(self) -> list[TfidfVectorizer]:
        common = dict(preprocessor=normalise, lowercase=False, sublinear_tf=True, min_df=self.min_df,
                      dtype=np.dtype(self.dtype))
        vecs = []
        if self.word_ngrams:
            vecs.append(TfidfVectorizer(
                analyzer="word", ngram_range=tuple(self.word_ngrams), token_pattern=None if self.stems
                else TOKEN_PATTERN, tokenizer=StemTokenizer() if self.stems else None,
                max_features=self.max_word_features, **common))
        if self.char_ngrams:
            vecs.append(TfidfVectorizer(
                analyzer="char_wb", ngram_range=tuple(self.char_ngrams), max_features=self.max_char_features,
                **common))
        return vecs

    # --- sklearn API -----------------------------------------------------------------------------

    def fit(self, x: Any, y: Any = None) -> TextFeatures:
        """Learn the vocabularies and idf weights."""
        check_nltk_data(self.required_nltk_data())
        texts = as_texts(x)
        self.vectorizers_ = self._vectorizers()
        if not self.vectorizers_ and not self.signals and not self.pos_tags:
            raise ValueError("TextFeatures needs at least one kind of feature")
        for vec in self.vectorizers_:
            vec.fit(texts)
            # the pruned-term set is never used to predict and bloats the artifact (STACK.md)
            if hasattr(vec, "stop_words_"):
                del vec.stop_words_
        self.n_features_out_ = sum(len(v.vocabulary_) for v in self.vectorizers_) + self._n_dense()
        self._lean = None
        return self

    def transform(self, x: Any) -> sp.csr_matrix:
        """The feature matrix (CSR) of the texts."""
        texts = as_texts(x)
        blocks = [vec.transform(texts) for vec in self.vectorizers_]
        if self._n_dense():
            dense = np.array([self._dense_values(t) for t in texts], dtype=self.dtype).reshape(len(texts), -1)
            blocks.append(sp.csr_matrix(dense))
        return sp.hstack(blocks, format="csr", dtype=np.dtype(self.dtype))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, block by block."""
        names: list[str] = []
        for i, vec in enumerate(self.vectorizers_):
            names += [f"{'word' if i == 0 and self.word_ngrams else 'char'}:{t}" for t in vec.get_feature_names_out()]
        names += [f"signal:{n}" for n in self._dense_names()]
        return np.array(names, dtype=object)

    def _dense_names(self) -> list[str]:
        return (SIGNAL_NAMES if self.signals else []) + (POS_NAMES if self.pos_tags else [])

    def _n_dense(self) -> int:
        return len(self._dense_names())

    def _dense_values(self, text: str) -> list[float]:
        values: list[float] = []
        if self.signals:
            values += [v * self.signal_weight for v in signal_values(text)]
        if self.pos_tags:
            values += [v * self.signal_weight for v in pos_values(text)]
        return values

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a model whose features need NLTK data must not load where the data is missing
        self.__dict__.update(state)
        self._lean = None
        if getattr(self, "pos_tags", False):
            check_nltk_data(self.required_nltk_data())

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lean", None)
        return state

    # --- lean single-text path -------------------------------------------------------------------

    def _lean_tables(self) -> list[tuple[Any, dict[str, int], np.ndarray, int]]:
        if getattr(self, "_lean", None) is None:
            tables, offset = [], 0
            for vec in self.vectorizers_:
                idf = np.asarray(vec.idf_, dtype=np.float64)
                tables.append((vec.build_analyzer(), vec.vocabulary_, idf, offset))
                offset += len(vec.vocabulary_)
            self._lean = tables
        return self._lean

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of one text's feature row: equal to `transform([text])`."""
        indices: list[int] = []
        values: list[np.ndarray] = []
        for analyzer, vocab, idf, offset in self._lean_tables():
            counts: dict[int, int] = {}
            for term in analyzer(text):
                j = vocab.get(term)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            cols = list(counts)
            v = (np.log(np.fromiter(counts.values(), np.float64, len(cols))) + 1.0) * idf[cols]
            norm = math.sqrt(float(v @ v))
            if norm > 0:
                v /= norm
            indices += [offset + j for j in cols]
            values.append(v)
        n_dense = self._n_dense()
        if n_dense:
            start = self.n_features_out_ - n_dense
            dense = self._dense_values(text)
            nz = [i for i, d in enumerate(dense) if d != 0.0]
            indices += [start + i for i in nz]
            values.append(np.array([dense[i] for i in nz], dtype=np.float64))
        if not indices:
            return np.zeros(0, dtype=np.intp), np.zeros(0)
        return np.array(indices, dtype=np.intp), np.concatenate(values)


def describe(features: TextFeatures) -> dict[str, Any]:
    """Parameters and size of fitted features, for run params and the training report."""
    return {
        "feature_set": features.feature_set_id(),
        "n_features": int(getattr(features, "n_features_out_", 0)),
        "nltk_data": features.required_nltk_data(),
    }

