"""Text features inside the model pipeline: normalised text, word/char TF-IDF, linguistic signals.

Training and serving run the same fitted `TextFeatures` object, so they compute the same thing.
`TextFeatures.sparse_one` is the lean single-text path: the same analyzers, vocabularies and idf
weights as `transform`, without sklearn's per-call overhead.
"""

from __future__ import annotations

import math
import re
import unicodedata
from array import array
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from intelrouter.errors import ConfigError

_INTP_CODE = next(c for c in "lqi" if array(c).itemsize == np.dtype(np.intp).itemsize)  # array code of np.intp

# Bump when the meaning of a feature changes without a parameter change: it is part of the feature set id.
FEATURE_CODE_VERSION = 1

TOKEN_PATTERN = r"(?u)\b\w+\b"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
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


def words_of(norm: str) -> list[str]:
    """The word tokens (TOKEN_PATTERN) of a normalised text; a text of letters, digits and spaces is just split."""
    return norm.split() if norm.replace(" ", "").isalnum() else _TOKEN_RE.findall(norm)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class StemTokenizer:
    """Word tokens (the vectorizer's default pattern) reduced to Porter stems; needs no NLTK data."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, doc: str) -> list[str]:
        """Tokenise and stem one normalised text."""
        return self.stems(words_of(doc))

    def stems(self, tokens: list[str]) -> list[str]:
        """The Porter stems of word tokens (cached per token)."""
        cache = self._cache
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


# Exact pre-checks for the patterns above: a pattern can only match where one of its characters or whole words
# occurs (the math pattern's digit rule needs a digit; every \d is a str.isdigit character). Most queries have
# none, and a set test costs far less than a regex scan of every position.
class _CharSet:
    """Characters to look for in a text: one C-level byte deletion on an ASCII text, a set test on any other."""

    __slots__ = ("chars", "ascii")

    def __init__(self, chars: str) -> None:
        self.chars = frozenset(chars)
        self.ascii = "".join(c for c in chars if c.isascii()).encode("ascii")

    def occurs_in(self, text: str, raw: bytes | None) -> bool:
        """Whether any of the characters occurs in the text (`raw`: the text's bytes when it is ASCII, else None)."""
        return len(raw.translate(None, self.ascii)) != len(raw) if raw is not None else not self.chars.isdisjoint(text)


_SENTENCE_CHARS = _CharSet(".!?")
_CODE_CHARS = _CharSet("`{}[];=>:(")  # `, brackets, ;, the = of == != =>, the > of ->, the : of ::, the ( of ()
_CODE_WORDS = frozenset("def class import return function select from print".split())
_MATH_CHARS = _CharSet("=∑∫√π±≤≥")
_MATH_WORDS = frozenset("sqrt log sin cos integral derivative equation solve".split())
_DIGITS = _CharSet("0123456789")
_PUNCT_RE = re.compile(r"[^\w\s]+")
_LETTER_BYTES = bytes(range(65, 91)) + bytes(range(97, 123))
_UPPER_BYTES = bytes(range(65, 91))


def _char_counts(text: str) -> tuple[int, int, int]:
    """Digits, letters and upper-case letters in the text (str.isdigit / isalpha / isupper counts)."""
    if text.isascii():  # the usual case: three C-level byte deletions instead of three loops over characters
        raw = text.encode("ascii")
        n = len(raw)
        return (n - len(raw.translate(None, _DIGITS.ascii)), n - len(raw.translate(None, _LETTER_BYTES)),
                n - len(raw.translate(None, _UPPER_BYTES)))
    letters = list(filter(str.isalpha, text))
    return sum(map(str.isdigit, text)), len(letters), sum(map(str.isupper, letters))


def signal_values(text: str, norm: str | None = None, words: list[str] | None = None) -> list[float]:
    """Linguistic signals of one raw text, each scaled to about [0, 1] (no fitted state).

    `norm` and `words` are `normalise(text)` and its word tokens, passed by callers that already have them.
    """
    if norm is None:
        norm = normalise(text)
    if words is None:
        words = words_of(norm)
    # tokens are the word runs and the punctuation runs (r"\w+|[^\w\s]+"); words and spaces alone have no punctuation
    n_tokens = len(words) + (0 if norm.replace(" ", "").isalnum() else len(_PUNCT_RE.findall(norm)))
    raw = norm.encode("ascii") if norm.isascii() else None
    sentences = (len(_SENTENCE_END_RE.findall(norm)) if _SENTENCE_CHARS.occurs_in(norm, raw) else 0) or (
        1 if words else 0)
    digits, n_letters, n_upper = _char_counts(text)
    code = 0
    if _CODE_CHARS.occurs_in(norm, raw) or not _CODE_WORDS.isdisjoint(words):
        code = len(_CODE_RE.findall(norm))
    math_ = 0
    has_digit = _DIGITS.occurs_in(norm, raw) if raw is not None else any(map(str.isdigit, norm))
    if has_digit or _MATH_CHARS.occurs_in(norm, raw) or not _MATH_WORDS.isdisjoint(words):
        math_ = len(_MATH_RE.findall(norm))
    return [
        math.log1p(n_tokens) / 5.0,
        math.log1p(sentences) / 3.0,
        min(sum(map(len, words)) / len(words) if words else 0.0, 20.0) / 10.0,
        1.0 if words and words[0] in _QUESTION_WORDS else 0.0,
        1.0 if "?" in text else 0.0,
        1.0 if digits else 0.0,
        digits / max(len(text), 1),
        min(code, 5) / 5.0,
        min(math_, 5) / 5.0,
        n_upper / n_letters if n_letters else 0.0,
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
        static: str | None = None,
        static_weight: float = 3.0,
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
        self.static = static
        self.static_weight = static_weight
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
        if self.static:
            parts.append(f"st-{self.static}x{self.static_weight:g}")
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
        if not self.vectorizers_ and not self.signals and not self.pos_tags and not self.static:
            raise ValueError("TextFeatures needs at least one kind of feature")
        if self.static:
            from intelrouter.static import StaticEncoder

            self.static_ = StaticEncoder.build(self.static)  # the table travels with the fitted features
        for vec in self.vectorizers_:
            vec.fit(texts)
            # the pruned-term set is never used to predict and bloats the artifact (STACK.md)
            if hasattr(vec, "stop_words_"):
                del vec.stop_words_
        self.n_features_out_ = (sum(len(v.vocabulary_) for v in self.vectorizers_) + self._n_dense() +
                                self._n_static())
        self._lean = None
        return self

    def transform(self, x: Any) -> sp.csr_matrix:
        """The feature matrix (CSR) of the texts."""
        texts = as_texts(x)
        blocks = [vec.transform(texts) for vec in self.vectorizers_]
        if self._n_dense():
            dense = np.array([self._dense_values(t) for t in texts], dtype=self.dtype).reshape(len(texts), -1)
            blocks.append(sp.csr_matrix(dense))
        if self._n_static():
            blocks.append(sp.csr_matrix(self.static_.encode(texts) * np.float32(self.static_weight)))
        return sp.hstack(blocks, format="csr", dtype=np.dtype(self.dtype))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, block by block."""
        names: list[str] = []
        for i, vec in enumerate(self.vectorizers_):
            names += [f"{'word' if i == 0 and self.word_ngrams else 'char'}:{t}" for t in vec.get_feature_names_out()]
        names += [f"signal:{n}" for n in self._dense_names()]
        names += [f"static:{i}" for i in range(self._n_static())]
        return np.array(names, dtype=object)

    def _dense_names(self) -> list[str]:
        return (SIGNAL_NAMES if self.signals else []) + (POS_NAMES if self.pos_tags else [])

    def _n_dense(self) -> int:
        return len(self._dense_names())

    def _n_static(self) -> int:
        return self.static_.dims if getattr(self, "static", None) else 0

    def _dense_values(self, text: str, norm: str | None = None, words: list[str] | None = None) -> list[float]:
        values: list[float] = []
        if self.signals:
            values += [v * self.signal_weight for v in signal_values(text, norm, words)]
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
        state.pop("_lean_starts", None)
        return state

    # --- lean single-text path -------------------------------------------------------------------

    def _lean_tables(self) -> list[LeanBlock]:
        if getattr(self, "_lean", None) is None:
            tables, offset = [], 0
            for vec in self.vectorizers_:
                tables.append(LeanBlock(vec, offset))
                offset += len(vec.vocabulary_)
            # block b's columns are [starts[b], starts[b + 1]); the signal columns follow with an idf of 1
            self._lean_starts = np.cumsum([0] + [len(v.vocabulary_) for v in self.vectorizers_])
            self._lean_idf = np.concatenate([np.asarray(v.idf_, dtype=np.float32) for v in self.vectorizers_] +
                                            [np.ones(self._n_dense(), dtype=np.float32)])
            self._lean = tables
        return self._lean

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices (sorted) and float32 values of one text's feature row: equal to `transform([text])`."""
        cols, vals, static = self.row_parts(text)
        if static is None:
            return cols, vals
        first = self.n_features_out_ - len(static)
        return (np.concatenate([cols, np.arange(first, self.n_features_out_)]), np.concatenate([vals, static]))

    def row_parts(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One text's row in two parts: sorted sparse columns with float32 values, and the static block or None.

        The static block is the last columns, dense: the serving path scores it as one contiguous product.
        The text is normalised and split into words once for every block. All blocks' term columns are gathered
        in one array, sorted, and repeats counted; then sublinear tf times idf, each block scaled to unit length,
        then the signals.
        """
        norm = normalise(text)
        words = words_of(norm)
        chunks: list[bytes] = []  # column ids as native intp bytes: joined and viewed as one array at the end
        for block in self._lean_tables():
            block.add_columns(chunks, text, norm, words)
        dense = self._dense_values(text, norm, words) if self._n_dense() else []
        n_static = self._n_static()
        first = self.n_features_out_ - n_static - len(dense)
        nz = [i for i, d in enumerate(dense) if d != 0.0]
        if nz:
            chunks.append(_intp_bytes([first + i for i in nz]))
        cols = np.frombuffer(bytearray().join(chunks), dtype=np.intp)  # a writable copy: sorted in place
        cols.sort()
        tf = None
        if len(cols) > 1:
            first_of_run = np.empty(len(cols), dtype=bool)
            first_of_run[0] = True
            np.not_equal(cols[1:], cols[:-1], out=first_of_run[1:])
            starts = first_of_run.nonzero()[0]
            if len(starts) < len(cols):  # a term occurs more than once: keep each column once, with its count
                runs = np.empty(len(starts) + 1, dtype=np.intp)  # where each run of equal columns starts, then the end
                runs[:-1] = starts
                runs[-1] = len(cols)
                tf = (runs[1:] - runs[:-1]).astype(np.float32)
                cols = cols.take(starts)
        vals = self._lean_idf.take(cols)
        if tf is not None:  # sublinear tf: 1 + log tf (exactly 1 where tf is 1)
            np.log(tf, out=tf)
            tf += 1.0
            vals *= tf
        bounds = cols.searchsorted(self._lean_starts).tolist()
        for start, end in zip(bounds, bounds[1:], strict=False):
            if end > start:
                block = vals[start:end]
                norm2 = float(block.dot(block))
                if norm2 > 0:
                    block /= math.sqrt(norm2)
        if nz:
            vals[len(vals) - len(nz):] = [dense[i] for i in nz]
        if not n_static:
            return cols, vals, None
        vec = self.static_.encode_one(text)
        vec *= np.float32(self.static_weight)
        return cols, vals, vec


def _intp_bytes(columns: list[int]) -> bytes:
    """Column ids as the raw bytes of an intp array (a bytes object is one allocation, untracked by the GC)."""
    return array(_INTP_CODE, columns).tobytes()


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
        self._cache: dict[str, bytes] = {}

    def add_columns(self, chunks: list[bytes], text: str, norm: str, words: list[str]) -> None:
        """Append the feature columns of the text's terms in this block (with repeats) to `chunks`, as intp bytes.

        `norm` is `normalise(text)` and `words` its word tokens (what the word analyzer's tokenizer sees).
        """
        if self.stem_ngrams:
            chunks.append(_intp_bytes([j for j in map(self.lookup, self._word_terms(words)) if j is not None]))
        elif not self.by_word:
            chunks.append(_intp_bytes([j for j in map(self.lookup, self.analyzer(text)) if j is not None]))
        else:
            cache = self._cache
            for word in norm.split():
                cols = cache.get(word)
                if cols is None:
                    if len(cache) >= self.MAX_CACHED_WORDS:  # serving sees unbounded vocabularies: keep memory flat
                        cache.clear()
                    cols = cache[word] = _intp_bytes([j for j in map(self.lookup, self.vec._char_wb_ngrams(word))
                                                      if j is not None])
                chunks.append(cols)

    def _word_terms(self, words: list[str]) -> list[str]:
        """sklearn's word n-grams (`_word_ngrams`) of the stemmed tokens, without its per-call overhead."""
        tokens = self.vec.tokenizer.stems(words)
        low, high = self.vec.ngram_range
        terms = tokens if low == 1 else []
        for n in range(max(low, 2), min(high, len(tokens)) + 1):
            terms += map(" ".join, zip(*[tokens[i:] for i in range(n)], strict=False))  # the n-grams
        return terms


def describe(features: TextFeatures) -> dict[str, Any]:
    """Parameters and size of fitted features, for run params and the training report."""
    return {
        "feature_set": features.feature_set_id(),
        "n_features": int(getattr(features, "n_features_out_", 0)),
        "nltk_data": features.required_nltk_data(),
    }

