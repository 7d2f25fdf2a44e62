"""Features: normalisation, TF-IDF blocks, signals, stems, the lean path, and NLTK data checks."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from training_support import synthetic_rows

from intelrouter.errors import ConfigError
from intelrouter.features import TextFeatures
from intelrouter.lean import LeanRows
from intelrouter.model import Router
from intelrouter.signals import check_nltk_data, signal_values
from intelrouter.text import TOKEN_PATTERN, normalise, words_of

ODD = ["", " ", "\t\n", "🙂🙂 ok", "ÅNGSTRÖM ﬁle café", "Ｆｕｌｌｗｉｄｔｈ ＴＥＸＴ", "a", "?!", "x" * 600,
       "what is 2+2?", "def f(): return x == 1;", "naïve résumé — “quotes”", "日本語のテキスト",
       "\u200b\u200bzero width",
       "ǅ titlecase", "İstanbul", "ß straße", "tab\tseparated\twords", "numbers 123 456.78", "e = mc^2 and √2"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [r["text"] for r in synthetic_rows(30, oos=10, seed=5)]


def test_normalise_folds_case_width_and_whitespace() -> None:
    assert normalise("  Ｈｅｌｌｏ\t WORLD \n") == "hello world"
    assert normalise("ﬁle") == "file"


def test_signals_mark_questions_digits_code_and_math() -> None:
    names = ["log_tokens", "log_sentences", "avg_word_len", "question_word_first", "question_mark", "has_digit",
             "digit_share", "code_markers", "math_markers", "upper_share"]
    question = dict(zip(names, signal_values("What is the capital of France?"), strict=True))
    assert question["question_word_first"] == 1.0 and question["question_mark"] == 1.0
    assert question["has_digit"] == 0.0 and question["code_markers"] == 0.0
    code = dict(zip(names, signal_values("def f(): return x == 1;"), strict=True))
    assert code["code_markers"] > 0 and code["question_word_first"] == 0.0
    math = dict(zip(names, signal_values("solve 3 + 4 = 7"), strict=True))
    assert math["math_markers"] > 0 and math["has_digit"] == 1.0
    assert signal_values("") == [0.0] * len(names)


def test_transform_has_word_char_and_signal_columns(texts: list[str]) -> None:
    features = TextFeatures().fit(texts)
    matrix = features.transform(texts[:5])
    names = features.get_feature_names_out()
    assert matrix.shape == (5, features.n_features_out_) == (5, len(names))
    assert any(n.startswith("word:") for n in names) and any(n.startswith("char:") for n in names)
    assert [n for n in names if n.startswith("signal:")][0] == "signal:log_tokens"
    assert matrix.dtype == np.float32


def test_stems_merge_inflected_forms() -> None:
    features = TextFeatures(stems=True, char_ngrams=None, signals=False, min_df=1).fit(
        ["i was running home", "she runs fast", "they run daily"])
    vocab = features.vectorizers_[0].vocabulary_
    assert "run" in vocab and "running" not in vocab and "runs" not in vocab


def test_feature_set_id_names_what_changes_the_features() -> None:
    base = TextFeatures().feature_set_id()
    assert base == TextFeatures().feature_set_id()
    assert TextFeatures(stems=False).feature_set_id() != base
    assert TextFeatures(char_ngrams=(3, 5)).feature_set_id() != base
    assert TextFeatures(signals=False).feature_set_id() != base


def test_no_pruned_term_set_is_kept(texts: list[str]) -> None:
    features = TextFeatures(min_df=3).fit(texts)
    assert all(not hasattr(v, "stop_words_") for v in features.vectorizers_)


@pytest.mark.parametrize("params", [
    {}, {"stems": False}, {"signals": False, "char_ngrams": (3, 4)}, {"word_ngrams": (1, 3)},
    {"word_ngrams": (2, 3), "char_ngrams": None}, {"word_ngrams": None, "min_df": 1},
])
def test_lean_row_equals_the_vectorizer_row(texts: list[str], params: dict) -> None:
    features = TextFeatures(**params).fit(texts)
    lean = LeanRows(features)
    sample = texts[:40] + ODD
    full = features.transform(sample).toarray()
    for _ in range(2):  # the second pass reads the per-word and stem caches the first one filled
        for i, text in enumerate(sample):
            row = np.zeros(features.n_features_out_)
            idx, vals = lean.sparse_one(text)
            row[idx] = vals
            np.testing.assert_allclose(row, full[i], rtol=1e-5, atol=1e-6, err_msg=repr(text))


def reference_signals(text: str) -> list[float]:
    """The signals the plain way (every pattern scanned, every character tested): what the fast path must equal."""
    import math

    from intelrouter import signals as f

    norm = normalise(text)
    tokens = re.findall(r"\w+|[^\w\s]+", norm)
    words = [t for t in tokens if t[0].isalnum() or t[0] == "_"]
    letters = [c for c in text if c.isalpha()]
    digits = sum(c.isdigit() for c in text)
    return [
        math.log1p(len(tokens)) / 5.0,
        math.log1p(len(f._SENTENCE_END_RE.findall(norm)) or (1 if words else 0)) / 3.0,
        min(sum(len(w) for w in words) / len(words) if words else 0.0, 20.0) / 10.0,
        1.0 if words and words[0] in f._QUESTION_WORDS else 0.0,
        1.0 if "?" in text else 0.0,
        1.0 if digits else 0.0,
        digits / max(len(text), 1),
        min(len(f._CODE_RE.findall(norm)), 5) / 5.0,
        min(len(f._MATH_RE.findall(norm)), 5) / 5.0,
        sum(c.isupper() for c in letters) / len(letters) if letters else 0.0,
    ]


@pytest.mark.parametrize("text", ODD + [
    "what is 2+2=4?", "x² + 1 = y", "def f(): return 1;", "a -> b => c :: d", "x == y != z", "sqrt(2) and log 3",
    "π ≈ 3.14 ± 0.01", "Hello. World! Really?!", "١٢ + ٣٤", "print() from select", "a `b` {c} [d]", "login to my blog",
    "the cost of sin", "...", "no markers at all here", "snake_case _x", "ＡＢＣ１２３", "Ⅻ ½ ² ³", "MiXeD CaSe 42",
])
def test_signals_equal_the_plain_computation(text: str) -> None:
    assert signal_values(text) == reference_signals(text)


@given(st.text(alphabet=st.sampled_from(list("aZ09 _.!?=(){}[];:`<>-+*/^√π≤½²١Ｆé\t\n")) | st.characters(),
               max_size=40))
@hsettings(max_examples=300, deadline=None)
def test_signals_equal_the_plain_computation_on_any_text(text: str) -> None:
    assert signal_values(text) == reference_signals(text)
    assert words_of(normalise(text)) == re.findall(TOKEN_PATTERN, normalise(text))
    assert words_of(text) == re.findall(TOKEN_PATTERN, text)


def test_missing_nltk_data_fails_with_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    with pytest.raises(ConfigError, match="nltk.downloader averaged_perceptron_tagger_eng"):
        check_nltk_data(["taggers/averaged_perceptron_tagger_eng"])
    with pytest.raises(ConfigError, match="averaged_perceptron_tagger_eng"):
        TextFeatures(pos_tags=True).fit(["some text here", "more text here"])


def test_model_with_pos_features_refuses_to_load_without_the_tagger(tmp_path: Path) -> None:
    """Fit with a (tiny, locally trained) tagger present, then load where it is missing: a clear error."""
    data = tmp_path / "nltk_data"
    script = textwrap.dedent(f"""
        import os, sys
        from nltk.tag.perceptron import PerceptronTagger
        from sklearn.linear_model import LogisticRegression
        from intelrouter.features import TextFeatures
        from intelrouter.model import Router, make_pipeline
        tagger = PerceptronTagger(load=False)
        tagger.train([[("what", "WP"), ("is", "VBZ"), ("the", "DT"), ("weather", "NN")],
                      [("book", "VB"), ("a", "DT"), ("red", "JJ"), ("flight", "NN")]] * 5, nr_iter=2)
        loc = os.path.join({str(data)!r}, "taggers", "averaged_perceptron_tagger_eng")
        os.makedirs(os.path.dirname(loc), exist_ok=True)
        tagger.save_to_json(lang="eng", loc=loc)
        pipe = make_pipeline(TextFeatures(pos_tags=True), LogisticRegression())
        pipe.fit(["what is the weather", "book a red flight", "what is it", "book a flight"] * 3, ["w", "b"] * 6)
        router = Router(pipe, 0.5)
        assert router.predict_one("what is the weather").top_label == "w"
        router.save(sys.argv[1])
    """)
    path = tmp_path / "router.pkl"
    env = {"NLTK_DATA": str(data), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ConfigError, match="taggers/averaged_perceptron_tagger_eng"):
        Router.load(path)
    with pytest.raises(ConfigError):
        pickle.loads(path.read_bytes())
