"""The model registry: the MLflow client, and the lifecycle testing → canary (@staging) → production, with rollback.

Aliases carry the lifecycle; version tags say it in words (`lifecycle`, `semver`, `threshold`, ...).
MLflow keeps no history of alias moves, so the production history is a JSON list in a registered-model
tag. Every function turns MLflow failures into one-line RegistryError / NotFoundError messages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from intelrouter.config import Settings
from intelrouter.errors import (
    InputError,
    IntelRouterError,
    NoActiveModelError,
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


def set_canary_share(settings: Settings, share: float) -> None:
    """Set the share of traffic @staging gets (0..1)."""
    if not 0.0 <= float(share) <= 1.0:
        raise InputError(f"canary share {share} is outside 0..1")
    client = get_client(settings)
    call(settings, "registered model", client.set_registered_model_tag, settings.model_name, CANARY_TAG, str(share))


def production_history(settings: Settings) -> list[str]:
    """Versions that held @production, oldest first (the current one last)."""
    raw = _registered_tags(settings).get(HISTORY_TAG)
    try:
        return [str(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        raise RegistryError(f"registered-model tag {HISTORY_TAG} is not a JSON list: fix or delete it") from None


def _set_history(client: MlflowClient, settings: Settings, history: list[str]) -> None:
    # tag values are bounded; the last 100 moves are plenty to roll back through
    value = json.dumps(history[-100:])
    call(settings, "registered model", client.set_registered_model_tag, settings.model_name, HISTORY_TAG, value)


def tag_version(settings: Settings, version: str | int, tags: dict[str, Any]) -> None:
    """Set version tags (values stringified and bounded in length)."""
    client = get_client(settings)
    for key, value in tags.items():
        call(settings, "model version tag", client.set_model_version_tag, settings.model_name, str(version), key,
             str(value)[:4900])


def _set_lifecycle(settings: Settings, version: str, lifecycle: str, **extra: Any) -> None:
    tag_version(settings, version, {"lifecycle": lifecycle, **extra})


def promote(settings: Settings, version: str | int, to: Literal["staging", "production"]) -> ModelVersion:
    """Point @staging (canary) or @production at a version and update the lifecycle tags."""
    if to not in ALIASES:
        raise InputError(f"cannot promote to {to!r}: use staging or production")
    mv = get_version(settings, version)
    client = get_client(settings)
    current = alias_version(settings, to)
    if current is not None and str(current.version) == str(mv.version):
        return mv
    if to == STAGING:
        prod = alias_version(settings, PRODUCTION)
        if prod is not None and str(prod.version) == str(mv.version):
            raise InputError(f"version {str(mv.version)} is already @production")
        call(settings, "alias", client.set_registered_model_alias, settings.model_name, STAGING, str(mv.version))
        try:
            _set_lifecycle(settings, str(mv.version), "canary")
            set_canary_share(settings, settings.canary_share)
            if current is not None:
                _set_lifecycle(settings, str(current.version), "archived")
        except IntelRouterError:
            _restore_alias(client, settings, STAGING, current)
            raise
        return mv
    history = production_history(settings)
    staging = alias_version(settings, STAGING)
    call(settings, "alias", client.set_registered_model_alias, settings.model_name, PRODUCTION, str(mv.version))
    try:
        if current is not None and (not history or history[-1] != str(current.version)):
            history.append(current.version)
        _set_history(client, settings, [*history, str(mv.version)])
        _set_lifecycle(settings, str(mv.version), "production")
        if current is not None:
            _set_lifecycle(settings, str(current.version), "archived")
        if staging is not None and str(staging.version) == str(mv.version):
            call(settings, "alias", client.delete_registered_model_alias, settings.model_name, STAGING)
    except IntelRouterError:
        _restore_alias(client, settings, PRODUCTION, current)
        raise
    return mv


def _restore_alias(client: MlflowClient, settings: Settings, alias: str, previous: ModelVersion | None) -> None:
    try:
        if previous is None:
            client.delete_registered_model_alias(settings.model_name, alias)
        else:
            client.set_registered_model_alias(settings.model_name, alias, str(previous.version))
    except Exception:  # best effort: the error that brought us here is the one to report
        pass


def rollback(settings: Settings) -> ModelVersion:
    """Move @production back to the previous production version in one step; returns that version."""
    client = get_client(settings)
    current = alias_version(settings, PRODUCTION)
    if current is None:
        raise NoActiveModelError()
    history = production_history(settings)
    while history and history[-1] == str(current.version):
        history.pop()
    previous = None
    while history:
        try:
            previous = get_version(settings, history[-1])
            break
        except NotFoundError:  # a deleted version cannot be restored; look further back
            history.pop()
    if previous is None:
        raise RegistryError(f"no earlier production version to roll back to (@production is v{str(current.version)})")
    call(settings, "alias", client.set_registered_model_alias, settings.model_name, PRODUCTION, str(previous.version))
    try:
        _set_history(client, settings, history)
        _set_lifecycle(settings, str(previous.version), "production")
        _set_lifecycle(settings, str(current.version), "rejected", rejected_reason="rolled back from production")
    except IntelRouterError:
        _restore_alias(client, settings, PRODUCTION, current)
        raise
    return previous


def clear_staging(settings: Settings, reason: str) -> ModelVersion | None:
    """End a canary: remove @staging, mark its version rejected with the reason; None when no canary runs."""
    staging = alias_version(settings, STAGING)
    if staging is None:
        return None
    client = get_client(settings)
    call(settings, "alias", client.delete_registered_model_alias, settings.model_name, STAGING)
    _set_lifecycle(settings, str(staging.version), "rejected", rejected_reason=reason)
    set_canary_share(settings, settings.canary_share)
    return staging


def register(settings: Settings, model_uri: str, tags: dict[str, str], passed: bool, reasons: list[str],
             hold: list[str] | None = None) -> tuple[str, str]:
    """Register a logged model as a new version with its tags, then move it by the gate: (version, lifecycle)."""
    import mlflow

    mv = call(settings, "register model", mlflow.register_model, model_uri, settings.model_name, tags=tags)
    return str(mv.version), apply_gate(settings, str(mv.version), passed, reasons, hold)


def apply_gate(settings: Settings, version: str | int, passed: bool, reasons: list[str],
               hold: list[str] | None = None) -> str:
    """Move a freshly registered version by the gate's decision; returns its new lifecycle.

    `hold`: reasons that keep a version that passed in testing instead of starting its canary (the shadow
    replay's limits); it then stays off every alias, its reasons in the `hold_reasons` tag.
    """
    text = "; ".join(reasons)
    tag_version(settings, version, {"gate": "passed" if passed else "failed", "gate_reasons": text})
    if not passed:
        _set_lifecycle(settings, str(version), "rejected", rejected_reason=f"gate failed: {text}")
        return "rejected"
    if alias_version(settings, PRODUCTION) is None:
        promote(settings, version, PRODUCTION)
        return "production"
    if hold:
        _set_lifecycle(settings, str(version), "testing", hold_reasons="; ".join(hold))
        return "testing"
    promote(settings, version, STAGING)
    return "canary"


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
