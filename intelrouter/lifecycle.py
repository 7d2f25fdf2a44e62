"""The lifecycle's moves in the registry: testing → canary (@staging) → production (@production), and back.

Aliases carry the lifecycle; version tags say it in words (`lifecycle`, `rejected_reason`, ...). MLflow keeps no
history of alias moves, so the production history is a JSON list in a registered-model tag. Every move refreshes
the SQL mirror of the registry (`registry_mirror`) once it has succeeded, and turns MLflow failures into one-line
RegistryError / NotFoundError messages (through `registry.call`).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from intelrouter import registry_mirror
from intelrouter.config import Settings
from intelrouter.errors import InputError, IntelRouterError, NoActiveModelError, NotFoundError, RegistryError
from intelrouter.names import ALIASES, PRODUCTION, STAGING
from intelrouter.registry import (
    CANARY_TAG,
    HISTORY_TAG,
    alias_version,
    call,
    describe_version,
    get_client,
    get_version,
    production_history,
    tag_version,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

F = TypeVar("F", bound=Callable[..., Any])


_moving = threading.local()  # how deep this thread is inside registry moves


def mirrored(move: F) -> F:
    """Refresh the registry's SQL mirror (registry_mirror) when the outermost move has succeeded.

    Every alias or lifecycle move goes through a function marked with this, so no caller (the CLI, the canary
    check, training, the demo, a script) can forget the mirror; nested moves refresh it once.
    """

    @functools.wraps(move)
    def wrapper(settings: Settings, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_moving, "depth", 0)
        _moving.depth = depth + 1
        try:
            result = move(settings, *args, **kwargs)
        finally:
            _moving.depth = depth
        if depth == 0:
            registry_mirror.refresh(settings)
        return result

    return cast(F, wrapper)


@mirrored
def set_canary_share(settings: Settings, share: float) -> None:
    """Set the share of traffic @staging gets (0..1)."""
    if not 0.0 <= float(share) <= 1.0:
        raise InputError(f"canary share {share} is outside 0..1")
    client = get_client(settings)
    call(settings, "registered model", client.set_registered_model_tag, settings.model_name, CANARY_TAG, str(share))


def _set_history(client: MlflowClient, settings: Settings, history: list[str]) -> None:
    # tag values are bounded; the last 100 moves are plenty to roll back through
    value = json.dumps(history[-100:])
    call(settings, "registered model", client.set_registered_model_tag, settings.model_name, HISTORY_TAG, value)


def _set_lifecycle(settings: Settings, version: str, lifecycle: str, **extra: Any) -> None:
    tag_version(settings, version, {"lifecycle": lifecycle, **extra})


@mirrored
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


@mirrored
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


@mirrored
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
             description: str | None = None, hold: list[str] | None = None) -> tuple[str, str]:
    """Register a logged model as a new version with its tags and description, then move it by the gate (and the
    shadow replay's `hold`): (version, lifecycle)."""
    import mlflow

    mv = call(settings, "register model", mlflow.register_model, model_uri, settings.model_name, tags=tags)
    if description:
        describe_version(settings, mv.version, description)
    return str(mv.version), apply_gate(settings, str(mv.version), passed, reasons, hold)


@mirrored
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
