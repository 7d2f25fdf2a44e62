"""Settings: defaults that need nothing installed, env vars, a settings file, errors that name the key."""

from pathlib import Path

import pytest

from intelrouter.config import load_settings
from intelrouter.errors import ConfigError


def test_defaults_are_embedded_and_follow_the_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.db_url == f"sqlite:///{tmp_path / '.intelrouter' / 'intelrouter.db'}"
    assert s.tracking_uri == f"sqlite:///{tmp_path / '.intelrouter' / 'mlflow.db'}"
    assert s.model_name == "intelrouter"
    assert (s.uncertain_threshold, s.auto_approve_threshold, s.review_threshold) == (0.6, 0.85, 0.70)
    assert (s.min_samples, s.weekly_trigger, s.alert_waiting) == (50, 500, 1000)
    assert (s.test_size, s.random_state) == (0.2, 42)
    assert s.router_provider not in s.trusted_providers


def test_env_vars_override_and_mlflow_uri_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("INTELROUTER_MIN_SAMPLES", "7")
    monkeypatch.setenv("INTELROUTER_TRUSTED_PROVIDERS", "teacher,indicbert")
    s = load_settings()
    assert s.tracking_uri == "http://127.0.0.1:5000"
    assert s.min_samples == 7
    assert s.trusted_providers == ["teacher", "indicbert"]
    monkeypatch.setenv("INTELROUTER_MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert load_settings().tracking_uri == "sqlite:///x.db"


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_settings_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    toml, yaml = 'model_name = "router-x"\nmin_samples = 9\n', "model_name: router-x\nmin_samples: 9\n"
    body = toml if suffix == ".toml" else yaml
    path = tmp_path / f"intelrouter{suffix}"
    path.write_text(body)
    monkeypatch.setenv("INTELROUTER_CONFIG", str(path))
    s = load_settings()
    assert (s.model_name, s.min_samples) == ("router-x", 9)
    monkeypatch.setenv("INTELROUTER_MIN_SAMPLES", "11")  # the environment wins over the file
    assert load_settings().min_samples == 11


def test_unknown_key_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTELROUTER_MIN_SAMPLE", "3")
    with pytest.raises(ConfigError, match="INTELROUTER_MIN_SAMPLE"):
        load_settings()
    monkeypatch.delenv("INTELROUTER_MIN_SAMPLE")
    path = tmp_path / "c.toml"
    path.write_text("min_sampels = 3\n")
    monkeypatch.setenv("INTELROUTER_CONFIG", str(path))
    with pytest.raises(ConfigError, match="min_sampels"):
        load_settings()


def test_bad_value_is_an_error_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTELROUTER_AUTO_APPROVE_THRESHOLD", "1.5")
    with pytest.raises(ConfigError, match="INTELROUTER_AUTO_APPROVE_THRESHOLD"):
        load_settings()
    monkeypatch.setenv("INTELROUTER_AUTO_APPROVE_THRESHOLD", "0.5")  # now below the review threshold
    with pytest.raises(ConfigError, match="review_threshold"):
        load_settings()


def test_the_feature_cache_directory_is_a_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INTELROUTER_CACHE", str(tmp_path / "tables"))
    assert load_settings().cache == tmp_path / "tables"  # documented in the README, accepted (it was refused)
    monkeypatch.setenv("INTELROUTER_CACHE", "~/somewhere")
    assert load_settings().cache == Path.home() / "somewhere"
