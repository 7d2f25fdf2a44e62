"""Settings: defaults that need nothing installed, env vars, a settings file, errors that name the key."""

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from intelrouter import store
from intelrouter.config import Settings, load_settings, secret
from intelrouter.errors import ConfigError
from intelrouter.salt import LEGACY_SALT, identifier_salt


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


SECRETS = {"api_key": "key-3f9a", "label_studio_api_key": "ls-token-77c1", "hash_salt": "salt-0d2e",
           "alert_webhook_url": "https://hooks.example.com/services/T000/B000/XXXXsecretXXXX"}


def test_secrets_never_show_in_the_settings_repr_or_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(f"INTELROUTER_{name.upper()}", value)
    s = load_settings()
    shown = repr(s) + str(s) + s.model_dump_json() + str(s.model_dump())
    for name, value in SECRETS.items():
        assert value not in shown, name
        assert secret(getattr(s, name)) == value
    assert secret(load_settings(api_key="").api_key) is None  # empty is unset


def test_the_hash_salt_is_generated_once_per_installation(settings: Settings, tmp_path: Path) -> None:
    salt = identifier_salt(settings)
    path = settings.data_dir / "hash-salt"
    assert path.read_text().strip() == salt and len(salt) == 64 and salt != LEGACY_SALT
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    res = subprocess.run([sys.executable, "-c", "from intelrouter.config import load_settings; "
                          "from intelrouter.salt import identifier_salt; print(identifier_salt(load_settings()))"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == salt  # another process of the same installation: the same salt
    other = load_settings(data_dir=tmp_path / "other", database_url=f"sqlite:///{tmp_path / 'other.db'}")
    assert identifier_salt(other) not in (salt, LEGACY_SALT)  # another installation: another salt


def test_a_second_host_with_its_own_salt_is_refused(settings: Settings, tmp_path: Path) -> None:
    identifier_salt(settings)
    second = load_settings(data_dir=tmp_path / "host-b")  # same database, an empty data dir
    with pytest.raises(ConfigError, match="hashed with another installation's salt: copy that installation's "
                                          "DATA_DIR/hash-salt"):
        identifier_salt(second)
    assert not (tmp_path / "host-b" / "hash-salt").exists()
    wrong = load_settings(data_dir=tmp_path / "host-c", hash_salt="not-the-one")
    with pytest.raises(ConfigError, match="INTELROUTER_HASH_SALT is not the salt the identifiers"):
        identifier_salt(wrong)
    right = load_settings(data_dir=tmp_path / "host-d", hash_salt=identifier_salt(settings))
    assert identifier_salt(right) == identifier_salt(settings)


def test_a_store_hashed_with_the_old_default_salt_keeps_it(settings: Settings) -> None:
    store.upgrade(settings)
    with store.connect(settings) as conn:  # a store from before the salt was per installation
        conn.execute(store.queries.insert().values(
            id="q-old", created_at=store.utcnow(), text="hi", user_hash=store.hash_identifier("u-1", LEGACY_SALT),
            predicted_label="greet", confidence=0.9, provider="intelrouter"))
    assert identifier_salt(settings) == LEGACY_SALT  # u-1's hash still matches, nothing is re-hashed
    assert (settings.data_dir / "hash-salt").read_text().strip() == LEGACY_SALT
