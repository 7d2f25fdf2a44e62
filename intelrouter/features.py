"""Text features inside the model pipeline: normalised text, word/char TF-IDF, linguistic signals.

Training and serving run the same fitted `TextFeatures` object, so they compute the same thing.
`TextFeatures.sparse_one` is the lean single-text path: the same analyzers, vocabularies and idf
weights as `transform`, without sklearn's per-call overhead.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
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
        tokens = _TOKEN_RE.findall(doc)
        out = list(map(cache.get, tokens))  # known tokens in one C loop; stem the rest
        if None in out:
            if len(cache) > 200_000:  # serving sees unbounded vocabularies; keep memory flat
                cache.clear()
            for i, tok in enumerate(tokens):
                if out[i] is None:
                    out[i] = cache[tok] = _stemmer().stem(tok)
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


# Exact pre-checks for the patterns above: each can only match where one of its hints occurs (the math
# pattern's digit rule is covered by `any(map(str.isdigit, ...))`: every \d is a str.isdigit character).
# Most queries contain none, and a few substring tests cost far less than a regex scan of every position.
_SENTENCE_HINTS = (".", "!", "?")
_CODE_HINTS = ("`", "{", "}", "[", "]", ";", "==", "!=", "->", "=>", "::", "()", "def", "class", "import", "return",
               "function", "select", "from", "print")
_MATH_HINTS = ("=", "∑", "∫", "√", "π", "±", "≤", "≥", "sqrt", "log", "sin", "cos", "integral", "derivative",
               "equation", "solve")


def _count(pattern: re.Pattern[str], hints: tuple[str, ...], text: str, scan: bool = False) -> int:
    """len(pattern.findall(text)), skipping the scan when no hint occurs in the text (and `scan` is false)."""
    return len(pattern.findall(text)) if scan or any(h in text for h in hints) else 0


def signal_values(text: str) -> list[float]:
    """Linguistic signals of one raw text, each scaled to about [0, 1] (no fitted state)."""
    norm = normalise(text)
    tokens = _WORDPUNCT_RE.findall(norm)
    words = [t for t in tokens if t[0].isalnum() or t[0] == "_"]
    n_chars = max(len(text), 1)
    sentences = _count(_SENTENCE_END_RE, _SENTENCE_HINTS, norm) or (1 if words else 0)
    avg_len = sum(map(len, words)) / len(words) if words else 0.0
    digits = sum(map(str.isdigit, text))  # map/filter over str methods: C loops, same counts as genexprs
    letters = list(filter(str.isalpha, text))
    return [
        math.log1p(len(tokens)) / 5.0,
        math.log1p(sentences) / 3.0,
        min(avg_len, 20.0) / 10.0,
        1.0 if words and words[0] in _QUESTION_WORDS else 0.0,
        1.0 if "?" in text else 0.0,
        1.0 if digits else 0.0,
        digits / n_chars,
        min(_count(_CODE_RE, _CODE_HINTS, norm), 5) / 5.0,
        min(_count(_MATH_RE, _MATH_HINTS, norm, any(map(str.isdigit, norm))), 5) / 5.0,
        sum(map(str.isupper, letters)) / len(letters) if letters else 0.0,
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
        state.pop("_lean_idf", None)
        return state

    # --- lean single-text path -------------------------------------------------------------------

    def _lean_tables(self) -> list[LeanBlock]:
        if getattr(self, "_lean", None) is None:
            tables, offset = [], 0
            for vec in self.vectorizers_:
                tables.append(LeanBlock(vec, offset))
                offset += len(vec.vocabulary_)
            self._lean = tables
            self._lean_idf = np.concatenate([np.asarray(v.idf_, dtype=np.float64) for v in self.vectorizers_] or
                                            [np.zeros(0)])
        return self._lean

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of one text's feature row: equal to `transform([text])`.

        One pass over all TF-IDF blocks: term counts in a Counter (columns in order of first occurrence, block
        after block), then sublinear tf times idf, each block scaled to unit length, then the signals.
        """
        counts: Counter[int] = Counter()
        ends, terms = [], 0
        for block in self._lean_tables():
            columns = block.columns(text)
            terms += len(columns)
            counts.update(columns)
            ends.append(len(counts))
        n = len(counts)
        cols = np.fromiter(counts, np.intp, n)
        vals = self._lean_idf.take(cols)
        if terms > n:  # a term occurs more than once: sublinear tf (1 + log tf; exactly 1 when every tf is 1)
            vals *= np.log(np.fromiter(counts.values(), np.float64, n)) + 1.0
        start = 0
        for end in ends:
            if end > start:
                block = vals[start:end]
                norm = math.sqrt(float(block @ block))
                if norm > 0:
                    block /= norm
            start = end
        n_dense = self._n_dense()
        if n_dense:
            first = self.n_features_out_ - n_dense
            dense = self._dense_values(text)
            nz = [i for i, d in enumerate(dense) if d != 0.0]
            if nz:
                cols = np.concatenate((cols, [first + i for i in nz]))
                vals = np.concatenate((vals, [dense[i] for i in nz]))
        return cols, vals


class LeanBlock:
    """One fitted vectorizer, ready for one-text lookups: a text's terms as feature columns.

    Character n-grams (`char_wb`) never cross a word boundary, so a word's columns are the same in every
    text: they are computed once per distinct word and cached (bounded), which makes the block ~10x cheaper
    than running the analyzer. Word n-grams go through the vectorizer's own analyzer.
    """

    MAX_CACHED_WORDS = 200_000

    def __init__(self, vec: TfidfVectorizer, offset: int) -> None:
        self.vec = vec
        vocab = vec.vocabulary_
        # column ids of the whole feature row: the vocabulary shifted by the block's offset
        self.lookup = (vocab if not offset else {term: j + offset for term, j in vocab.items()}).get
        self.analyzer = vec.build_analyzer()
        self.by_word = vec.analyzer == "char_wb" and vec.preprocessor is normalise
        # word n-grams of stems, no stop words: the analyzer's steps inlined (same terms, same order)
        self.stem_ngrams = (vec.analyzer == "word" and vec.preprocessor is normalise and vec.stop_words is None
                            and isinstance(vec.tokenizer, StemTokenizer))
        self._cache: dict[str, tuple[int, ...]] = {}

    def columns(self, text: str) -> list[int]:
        """Feature columns of the text's terms in this block, with repeats, in the analyzer's order."""
        if self.stem_ngrams:
            return [j for j in map(self.lookup, self._word_terms(text)) if j is not None]
        if not self.by_word:
            return [j for j in map(self.lookup, self.analyzer(text)) if j is not None]
        cache, out = self._cache, []
        for word in normalise(text).split():
            cols = cache.get(word)
            if cols is None:
                if len(cache) >= self.MAX_CACHED_WORDS:  # serving sees unbounded vocabularies: keep memory flat
                    cache.clear()
                # a tuple of ints is untracked by the garbage collector: a big cache costs collections nothing
                cols = cache[word] = tuple(j for j in map(self.lookup, self.vec._char_wb_ngrams(word)) if j is not None)
            out += cols
        return out

    def _word_terms(self, text: str) -> list[str]:
        """sklearn's word n-grams (`_word_ngrams`) of the stemmed tokens, without its per-call overhead."""
        tokens = self.vec.tokenizer(normalise(text))
        low, high = self.vec.ngram_range
        terms = list(tokens) if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            terms += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return terms


def describe(features: TextFeatures) -> dict[str, Any]:
    """Parameters and size of fitted features, for run params and the training report."""
    return {
        "feature_set": features.feature_set_id(),
        "n_features": int(getattr(features, "n_features_out_", 0)),
        "nltk_data": features.required_nltk_data(),
    }

