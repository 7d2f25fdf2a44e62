"""Linguistic signals of one text (length, sentences, question words, code and math markers, POS shares).

No fitted state: each signal is scaled to about [0, 1]. They need no NLTK data, except the optional POS
shares, whose tagger data must be on the machine (never downloaded at run time).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from intelrouter.errors import ConfigError
from intelrouter.text import TOKEN_RE, normalise, words_of

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

    words = TOKEN_RE.findall(normalise(text))
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
