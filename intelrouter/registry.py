"""The model registry as the loop reads it: the MLflow client, versions, aliases, the canary share, semver.

Aliases carry the lifecycle (@production, @staging = the canary); version tags say it in words (`lifecycle`,
`semver`, `threshold`, ...). The moves between them are `intelrouter.lifecycle`'s. Every function turns MLflow
failures into one-line RegistryError / NotFoundError messages (`call`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from intelrouter.config import Settings
from intelrouter.errors import (
    IntelRouterError,
    NotFoundError,
    RegistryError,
    first_line,
)
from intelrouter.names import ALIASES, PRODUCTION, STAGING

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

T = TypeVar("T")
LIFECYCLES = ("testing", "canary", "production", "rejected", "archived")
HISTORY_TAG = "production_history"
CANARY_TAG = "canary_share"
_CONNECTION_HINTS = ("api request to", "max retries", "connection refused", "failed to establish", "timed out",
                     "unable to open database", "could not connect", "connection to server")


def quiet_mlflow() -> None:
    """Short HTTP retries (a dead server is one line fast, not minutes of back-off) and no progress bars."""
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20"), ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
                       ("GIT_PYTHON_REFRESH", "quiet")):
        os.environ.setdefault(key, value)


def get_client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured tracking/registry URI."""
    quiet_mlflow()
    from mlflow import MlflowClient

    try:
        return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    except Exception as exc:
        raise RegistryError(failure_message(settings, exc)) from None


def failure_message(settings: Settings, exc: BaseException) -> str:
    """One line for an MLflow failure: unreachable (with what to check) or refused (with MLflow's reason)."""
    reason = first_line(exc)
    where = safe_uri(settings.tracking_uri)
    if isinstance(exc, ConnectionError | OSError) or any(h in reason.lower() for h in _CONNECTION_HINTS):
        return (f"model registry at {where} is unreachable ({reason}): "
                "check INTELROUTER_MLFLOW_TRACKING_URI and that the server runs")
    return f"MLflow at {where} refused the request: {reason}"


def safe_uri(uri: str) -> str:
    """A tracking URI with any credentials masked."""
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def is_not_found(exc: BaseException) -> bool:
    """Whether MLflow said the resource does not exist."""
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def call(settings: Settings, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one MLflow call; a missing resource is NotFoundError, anything else a RegistryError."""
    try:
        return fn(*args, **kwargs)
    except IntelRouterError:
        raise
    except Exception as exc:
        if is_not_found(exc):
            raise NotFoundError(f"{what}: {first_line(exc)}") from None
        raise RegistryError(failure_message(settings, exc)) from None


def _check_alias(alias: str) -> str:
    if alias not in ALIASES:
        raise NotFoundError(f"unknown alias {alias!r}: use one of {', '.join(ALIASES)}")
    return alias


def alias_version(settings: Settings, alias: str) -> ModelVersion | None:
    """The version an alias points to, or None when the alias (or the registered model) is not set."""
    _check_alias(alias)
    client = get_client(settings)
    try:
        return client.get_model_version_by_alias(settings.model_name, alias)
    except Exception as exc:
        # an unset alias comes back as INVALID_PARAMETER_VALUE "... alias ... not found"
        if is_not_found(exc) or (getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"
                               and "not found" in str(exc).lower()):
            return None
        raise RegistryError(failure_message(settings, exc)) from None


def get_version(settings: Settings, version: str | int) -> ModelVersion:
    """One registered version; NotFoundError naming it when it does not exist."""
    client = get_client(settings)
    version = str(version).lstrip("v") if str(version).lstrip("v").isdigit() else str(version)
    if not version.isdigit():
        found = [mv for mv in list_model_versions(settings) if mv.tags.get("semver") == version.lstrip("v")]
        if not found:
            raise NotFoundError(f"model {settings.model_name} has no version {version}: see `intelrouter models`")
        return found[0]
    try:
        return call(settings, "model version", client.get_model_version, settings.model_name, version)
    except NotFoundError:
        raise NotFoundError(f"model {settings.model_name} has no version {version}: see `intelrouter models`") from None


def model_uri(settings: Settings, version: str | int) -> str:
    """The models:/ URI of one version."""
    return f"models:/{settings.model_name}/{version}"


def list_model_versions(settings: Settings) -> list[ModelVersion]:
    """Every version of the registered model, newest first (empty when none is registered)."""
    client = get_client(settings)
    versions = call(settings, "model versions", client.search_model_versions, f"name='{settings.model_name}'")
    return sorted(versions, key=lambda mv: int(mv.version), reverse=True)


def _registered_tags(settings: Settings) -> dict[str, str]:
    client = get_client(settings)
    try:
        return dict(call(settings, "registered model", client.get_registered_model, settings.model_name).tags)
    except NotFoundError:
        return {}


def where_aliases_point(settings: Settings) -> dict[str, Any]:
    """The version behind @production and @staging (None when unset), and the canary share."""
    prod, staging = alias_version(settings, PRODUCTION), alias_version(settings, STAGING)
    return {PRODUCTION: str(prod.version) if prod else None, STAGING: str(staging.version) if staging else None,
            "canary_share": canary_share(settings)}


def canary_share(settings: Settings) -> float:
    """The share of traffic @staging gets (registered-model tag, default settings.canary_share)."""
    raw = _registered_tags(settings).get(CANARY_TAG)
    try:
        return min(max(float(raw), 0.0), 1.0) if raw is not None else settings.canary_share
    except ValueError:
        return settings.canary_share


def production_history(settings: Settings) -> list[str]:
    """Versions that held @production, oldest first (the current one last)."""
    raw = _registered_tags(settings).get(HISTORY_TAG)
    try:
        return [str(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        raise RegistryError(f"registered-model tag {HISTORY_TAG} is not a JSON list: fix or delete it") from None


def tag_version(settings: Settings, version: str | int, tags: dict[str, Any]) -> None:
    """Set version tags (values stringified and bounded in length)."""
    client = get_client(settings)
    for key, value in tags.items():
        call(settings, "model version tag", client.set_model_version_tag, settings.model_name, str(version), key,
             str(value)[:4900])


def describe_version(settings: Settings, version: str | int, description: str) -> None:
    """Set a version's description (markdown, shown on its registry page)."""
    client = get_client(settings)
    call(settings, "model version", client.update_model_version, settings.model_name, str(version),
         description=description)


def parse_semver(value: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of 'X.Y.Z' (a leading v allowed), None when it is not one."""
    try:
        major, minor, patch = (int(p) for p in str(value).lstrip("v").split("."))
    except (TypeError, ValueError):
        return None
    return major, minor, patch


def next_semver(settings: Settings, feature_set: str) -> str:
    """Next version: 1.0.0 first, a minor bump per retrain, a major bump when the feature set changes."""
    latest: tuple[tuple[int, int, int], ModelVersion] | None = None
    for mv in list_model_versions(settings):
        parsed = parse_semver(mv.tags.get("semver"))
        if parsed and (latest is None or parsed > latest[0]):
            latest = (parsed, mv)
    if latest is None:
        return "1.0.0"
    (major, minor, _), mv = latest
    if mv.tags.get("feature_set") != feature_set:
        return f"{major + 1}.0.0"
    return f"{major}.{minor + 1}.0"


def describe_versions(settings: Settings) -> list[dict[str, Any]]:
    """Rows for `intelrouter models`: version, semver, lifecycle, aliases, key metrics, created time."""
    aliases: dict[str, list[str]] = {}
    for alias in ALIASES:
        mv = alias_version(settings, alias)
        if mv is not None:
            aliases.setdefault(str(mv.version), []).append(alias)
    rows = []
    for mv in list_model_versions(settings):
        tags = mv.tags
        rows.append({
            "version": str(mv.version),
            "semver": tags.get("semver", ""),
            "lifecycle": tags.get("lifecycle", ""),
            "aliases": aliases.get(str(mv.version), []),
            "accuracy": tags.get("test_accuracy", ""),
            "macro_f1": tags.get("test_macro_f1", ""),
            "recent_accuracy": tags.get("recent_accuracy", ""),
            "threshold": tags.get("threshold", ""),
            "created": mv.creation_timestamp,
            "run_id": mv.run_id,
        })
    return rows
