"""The one-text fast path: a fitted `TextFeatures` row for one text without sklearn's per-call overhead.

The same analyzers, vocabularies and idf weights as `TextFeatures.transform`, so the row is equal; the
serving path (`Router.predict_one`) and batch prediction both run it, so they give the same floats.
"""

from __future__ import annotations

import math
from array import array

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from intelrouter.features import StemTokenizer, TextFeatures
from intelrouter.text import normalise, words_of

_INTP_CODE = next(c for c in "lqi" if array(c).itemsize == np.dtype(np.intp).itemsize)  # array code of np.intp


class LeanRows:
    """A fitted TextFeatures made ready for one text at a time (built once per loaded model, never pickled)."""

    def __init__(self, features: TextFeatures) -> None:
        self.features = features
        vectorizers = features.vectorizers_
        self.blocks, offset = [], 0
        for vec in vectorizers:
            self.blocks.append(LeanBlock(vec, offset))
            offset += len(vec.vocabulary_)
        # block b's columns are [starts[b], starts[b + 1]); the signal columns follow with an idf of 1
        self.starts = np.cumsum([0] + [len(v.vocabulary_) for v in vectorizers])
        self.idf = np.concatenate([np.asarray(v.idf_, dtype=np.float32) for v in vectorizers] +
                                  [np.ones(features.n_dense, dtype=np.float32)])
        self.n_dense, self.n_static, self.n_out = features.n_dense, features.n_static, features.n_features_out_

    def sparse_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices (sorted) and float32 values of one text's feature row: equal to `transform([text])`."""
        cols, vals, static = self.row_parts(text)
        if static is None:
            return cols, vals
        first = self.n_out - len(static)
        return (np.concatenate([cols, np.arange(first, self.n_out)]), np.concatenate([vals, static]))

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
        for block in self.blocks:
            block.add_columns(chunks, text, norm, words)
        dense = self.features.dense_values(text, norm, words) if self.n_dense else []
        first = self.n_out - self.n_static - len(dense)
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
        vals = self.idf.take(cols)
        if tf is not None:  # sublinear tf: 1 + log tf (exactly 1 where tf is 1)
            np.log(tf, out=tf)
            tf += 1.0
            vals *= tf
        bounds = cols.searchsorted(self.starts).tolist()
        for start, end in zip(bounds, bounds[1:], strict=False):
            if end > start:
                block = vals[start:end]
                norm2 = float(block.dot(block))
                if norm2 > 0:
                    block /= math.sqrt(norm2)
        if nz:
            vals[len(vals) - len(nz):] = [dense[i] for i in nz]
        if not self.n_static:
            return cols, vals, None
        features = self.features
        vec = features.static_.encode_one(text)
        vec *= np.float32(features.static_weight)
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

