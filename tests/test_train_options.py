"""Bad `--features` values are reported as such: never as "insufficient data", never as a skip by the train flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from intelrouter.config import Settings, load_settings
from intelrouter.errors import InputError, InsufficientDataError
from intelrouter.labels import import_labels
from intelrouter.train import TrainOptions, feature_params, fit_router, make_features

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("features", "message"), [
    ({"min_df": 0}, "bad features: min_df=0: must be a number of texts (1 or more) or a share of them in (0, 1]"),
    ({"min_df": 1.5}, "bad features: min_df=1.5: must be a number of texts"),
    ({"word_ngrams": [2, 1]}, "bad features: word_ngrams must be [low, high] with low <= high, not [2, 1]"),
    ({"char_ngrams": [0, 3]}, "bad features: char_ngrams=[0, 3]: Input should be greater than 0"),
    ({"signal_weight": "high"}, 'bad features: signal_weight="high": Input should be a valid number'),
    ({"stems": "yes"}, 'bad features: stems="yes": Input should be a valid boolean'),
    ({"dtype": "int8"}, "bad features: dtype=\"int8\": Input should be 'float32' or 'float64'"),
    ({"max_word_features": 0}, "bad features: max_word_features=0: Input should be greater than 0"),
    ({"min_dff": 2}, "bad features: min_dff=2: not a feature parameter (use word_ngrams, char_ngrams, min_df"),
    ({"word_ngrams": None, "char_ngrams": None, "signals": False}, "every kind of feature is switched off"),
])
def test_bad_feature_values_are_input_errors_naming_them(features: dict, message: str) -> None:
    with pytest.raises(InputError) as err:
        feature_params(load_settings(), TrainOptions(features=features))
    assert message in str(err.value) and not isinstance(err.value, InsufficientDataError)


def test_min_df_beyond_the_training_rows_is_a_feature_error_not_too_little_data(settings: Settings) -> None:
    train = pd.DataFrame({"text": [f"text {i} about {w}" for i, w in enumerate(["cats", "dogs"] * 30)],
                          "label": ["cat", "dog"] * 30})
    options = TrainOptions(features={"min_df": 500})
    with pytest.raises(InputError, match="bad features: min_df=500 is more than the 60 training texts") as err:
        fit_router(train, train.iloc[:0], make_features(settings, options), options, settings)
    assert not isinstance(err.value, InsufficientDataError)


def test_cli_train_with_bad_features_is_one_line_about_the_features(settings: Settings) -> None:
    import_labels(settings, REPO / "cli" / "demo_queries.csv")
    res = subprocess.run([sys.executable, "-m", "cli", "train", "--features", json.dumps({"min_df": 0})],
                         capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: bad features: min_df=0: must be a number of texts (1 or more) or a share of them in (0, 1]"]
