"""The model registry lifecycle: testing → canary (@staging) → production (@production), with rollback.

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
from intelrouter.errors import InputError, IntelRouterError, NoActiveModelError, NotFoundError, RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from intelrouter.model import Router

ALIASES = ("production", "staging")
LIFECYCLES = ("testing", "canary", "production", "rejected", "archived")
HISTORY_TAG = "production_history"
CANARY_TAG = "canary_share"
T = TypeVar("T")


def get_client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured tracking/registry URI (HTTP retries kept short)."""
    # the default retry policy waits minutes on a dead server; a CLI or a serving poll wants one line fast
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    try:
        return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    except Exception as exc:
        raise RegistryError(failure_message(settings, exc)) from None


_CONNECTION_HINTS = ("api request to", "max retries", "connection refused", "failed to establish", "timed out",
                     "unable to open database", "could not connect", "connection to server")


def failure_message(settings: Settings, exc: BaseException) -> str:
    """One line for an MLflow failure: unreachable (with what to check) or refused (with MLflow's reason)."""
    reason = _first_line(exc)
    where = _safe_uri(settings.tracking_uri)
    if isinstance(exc, ConnectionError | OSError) or any(h in reason.lower() for h in _CONNECTION_HINTS):
        return (f"model registry at {where} is unreachable ({reason}): "
                "check INTELROUTER_MLFLOW_TRACKING_URI and that the server runs")
    return f"MLflow at {where} refused the request: {reason}"


def _safe_uri(uri: str) -> str:
    if "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def call(settings: Settings, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one registry call; a missing resource is NotFoundError, anything else a RegistryError."""
    try:
        return fn(*args, **kwargs)
    except IntelRouterError:
        raise
    except Exception as exc:
        if _not_found(exc):
            raise NotFoundError(f"{what}: {_first_line(exc)}") from None
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
        if _not_found(exc) or (getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"
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


def load_version(settings: Settings, version: str | int) -> Router:
    """Load the Router of one registered version."""
    from intelrouter.model import load_router

    return load_router(model_uri(settings, str(get_version(settings, version).version)), settings.tracking_uri)


def load_alias(settings: Settings, alias: str) -> tuple[ModelVersion, Router] | None:
    """The version behind an alias and its loaded Router, or None when the alias is not set."""
    mv = alias_version(settings, alias)
    if mv is None:
        return None
    from intelrouter.model import load_router

    return mv, load_router(model_uri(settings, str(mv.version)), settings.tracking_uri)


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


def set_tags(settings: Settings, version: str | int, tags: dict[str, Any]) -> None:
    """Set version tags (values stringified and bounded in length)."""
    client = get_client(settings)
    for key, value in tags.items():
        call(settings, "model version tag", client.set_model_version_tag, settings.model_name, str(version), key,
             str(value)[:4900])


def _set_lifecycle(settings: Settings, version: str, lifecycle: str, **extra: Any) -> None:
    set_tags(settings, version, {"lifecycle": lifecycle, **extra})


def promote(settings: Settings, version: str | int, to: Literal["staging", "production"]) -> ModelVersion:
    """Point @staging (canary) or @production at a version and update the lifecycle tags."""
    if to not in ALIASES:
        raise InputError(f"cannot promote to {to!r}: use staging or production")
    mv = get_version(settings, version)
    client = get_client(settings)
    current = alias_version(settings, to)
    if current is not None and str(current.version) == str(mv.version):
        return mv
    if to == "staging":
        prod = alias_version(settings, "production")
        if prod is not None and str(prod.version) == str(mv.version):
            raise InputError(f"version {str(mv.version)} is already @production")
        call(settings, "alias", client.set_registered_model_alias, settings.model_name, "staging", str(mv.version))
        try:
            _set_lifecycle(settings, str(mv.version), "canary")
            set_canary_share(settings, settings.canary_share)
            if current is not None:
                _set_lifecycle(settings, str(current.version), "archived")
        except IntelRouterError:
            _restore_alias(client, settings, "staging", current)
            raise
        return mv
    history = production_history(settings)
    staging = alias_version(settings, "staging")
    call(settings, "alias", client.set_registered_model_alias, settings.model_name, "production", str(mv.version))
    try:
        if current is not None and (not history or history[-1] != str(current.version)):
            history.append(current.version)
        _set_history(client, settings, [*history, str(mv.version)])
        _set_lifecycle(settings, str(mv.version), "production")
        if current is not None:
            _set_lifecycle(settings, str(current.version), "archived")
        if staging is not None and str(staging.version) == str(mv.version):
            call(settings, "alias", client.delete_registered_model_alias, settings.model_name, "staging")
    except IntelRouterError:
        _restore_alias(client, settings, "production", current)
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
    current = alias_version(settings, "production")
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
    call(settings, "alias", client.set_registered_model_alias, settings.model_name, "production", str(previous.version))
    try:
        _set_history(client, settings, history)
        _set_lifecycle(settings, str(previous.version), "production")
        _set_lifecycle(settings, str(current.version), "rejected", rejected_reason="rolled back from production")
    except IntelRouterError:
        _restore_alias(client, settings, "production", current)
        raise
    return previous


def clear_staging(settings: Settings, reason: str) -> ModelVersion | None:
    """End a canary: remove @staging, mark its version rejected with the reason; None when no canary runs."""
    staging = alias_version(settings, "staging")
    if staging is None:
        return None
    client = get_client(settings)
    call(settings, "alias", client.delete_registered_model_alias, settings.model_name, "staging")
    _set_lifecycle(settings, str(staging.version), "rejected", rejected_reason=reason)
    set_canary_share(settings, settings.canary_share)
    return staging


def apply_gate(settings: Settings, version: str | int, passed: bool, reasons: list[str]) -> str:
    """Move a freshly registered version by the gate's decision; returns its new lifecycle."""
    text = "; ".join(reasons)
    set_tags(settings, version, {"gate": "passed" if passed else "failed", "gate_reasons": text})
    if not passed:
        _set_lifecycle(settings, str(version), "rejected", rejected_reason=f"gate failed: {text}")
        return "rejected"
    if alias_version(settings, "production") is None:
        promote(settings, version, "production")
        return "production"
    promote(settings, version, "staging")
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
