"""The lifecycle's moves in the registry: testing → canary (@staging) → production (@production), and back.

Aliases carry the lifecycle; version tags say it in words (`lifecycle`, `rejected_reason`, ...). MLflow keeps no
history of alias moves, so the production history is a JSON list in a registered-model tag. Every move is first
recorded in the registered-model tag `pending_move`, then made step by step (each step safe to repeat), then the
record is dropped: `settle` (run by every move first, and by `recovery`) finishes a move a crash cut short, and
turns "@staging on @production's version" into the finished promotion. Every move refreshes
the SQL mirror of the registry (`registry_mirror`) once it has succeeded, and turns MLflow failures into one-line
RegistryError / NotFoundError messages (through `registry.call`).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from intelrouter import registry_mirror
from intelrouter.config import Settings
from intelrouter.errors import InputError, IntelRouterError, NoActiveModelError, NotFoundError, RegistryError
from intelrouter.names import ALIASES, PRODUCTION, STAGING
from intelrouter.registry import (
    CANARY_TAG,
    HISTORY_TAG,
    PENDING_TAG,
    alias_version,
    call,
    describe_version,
    get_client,
    get_version,
    model_tags,
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
    settle(settings)  # a move a crash left half done is finished first
    v, current = str(mv.version), alias_version(settings, to)
    previous = str(current.version) if current is not None else None
    if to == STAGING:
        prod = alias_version(settings, PRODUCTION)
        if prod is not None and str(prod.version) == v:
            raise InputError(f"version {v} is already @production")
        if previous != v:  # the same canary again keeps its share
            _move(settings, {"op": STAGING, "version": v, "previous": previous})
        return mv
    history = production_history(settings)
    for held in (previous, v):  # the history ends with the old production version, then the new one
        if held is not None and (not history or history[-1] != held):
            history.append(held)
    # run even when @production is there already: finishing the rest (staging cleared, tags) is what makes a
    # promotion cut short by a crash complete
    _move(settings, {"op": PRODUCTION, "version": v, "previous": previous if previous != v else None,
                     "history": history})
    return mv


@mirrored
def rollback(settings: Settings) -> ModelVersion:
    """Move @production back to the previous production version in one step; returns that version."""
    settle(settings)
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
    _move(settings, {"op": "rollback", "version": str(previous.version), "previous": str(current.version),
                     "history": history})
    return previous


@mirrored
def clear_staging(settings: Settings, reason: str) -> ModelVersion | None:
    """End a canary: remove @staging, mark its version rejected with the reason; None when no canary runs."""
    settle(settings)
    staging = alias_version(settings, STAGING)
    if staging is None:
        return None
    _move(settings, {"op": "clear", "version": str(staging.version), "reason": reason})
    return staging


def _move(settings: Settings, move: dict[str, Any]) -> None:
    """Record the move in a registered-model tag, make it, then drop the record: a crash leaves it to `settle`."""
    client = get_client(settings)
    move = {**move, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    call(settings, "registered model", client.set_registered_model_tag, settings.model_name, PENDING_TAG,
         json.dumps(move))
    try:
        _finish(settings, client, move)
        call(settings, "registered model", client.delete_registered_model_tag, settings.model_name, PENDING_TAG)
    except IntelRouterError as exc:
        raise RegistryError(f"{exc} (the move of version {move['version']} ({move['op']}) is recorded: the next "
                            "training or canary check finishes it)") from None


def _finish(settings: Settings, client: MlflowClient, move: dict[str, Any]) -> None:
    """Every step of a move, each one safe to repeat: the first run and a recovery run the same code."""
    op, v, previous, name = move["op"], move["version"], move.get("previous"), settings.model_name
    if op == "clear":
        staging = alias_version(settings, STAGING)
        if staging is not None and str(staging.version) == v:
            call(settings, "alias", client.delete_registered_model_alias, name, STAGING)
        _set_lifecycle(settings, v, "rejected", rejected_reason=move.get("reason", ""))
        set_canary_share(settings, settings.canary_share)
        return
    call(settings, "alias", client.set_registered_model_alias, name, STAGING if op == STAGING else PRODUCTION, v)
    if op == STAGING:
        _set_lifecycle(settings, v, "canary")
        set_canary_share(settings, settings.canary_share)
        if previous is not None:
            _set_lifecycle(settings, previous, "archived")
        return
    _set_history(client, settings, move["history"])
    _set_lifecycle(settings, v, "production")
    if previous is not None and op == "rollback":
        _set_lifecycle(settings, previous, "rejected", rejected_reason="rolled back from production")
    elif previous is not None:
        _set_lifecycle(settings, previous, "archived")
    staging = alias_version(settings, STAGING)
    if staging is not None and str(staging.version) == v:  # the canary became production: no canary any more
        call(settings, "alias", client.delete_registered_model_alias, name, STAGING)


@mirrored
def settle(settings: Settings) -> list[str]:
    """Finish a lifecycle move a crash left half done, and end "@staging on @production's version".

    Returns what it did, one line each (empty when the registry was consistent)."""
    done = []
    raw = model_tags(settings).get(PENDING_TAG)
    if raw:
        try:
            move = json.loads(raw)
            move["op"], move["version"]  # noqa: B018 - a record without them is not ours
        except (ValueError, TypeError, KeyError):
            raise RegistryError(f"registered-model tag {PENDING_TAG} is not a move record: fix or delete it") from None
        client = get_client(settings)
        _finish(settings, client, move)
        call(settings, "registered model", client.delete_registered_model_tag, settings.model_name, PENDING_TAG)
        done.append(f"finished the interrupted move of version {move['version']} ({move['op']}) "
                    f"recorded at {move.get('at', '?')}")
    prod, staging = alias_version(settings, PRODUCTION), alias_version(settings, STAGING)
    if prod is not None and staging is not None and str(prod.version) == str(staging.version):
        # a promotion cut short before the pending record existed (or by hand): finish it as one
        v, history = str(prod.version), production_history(settings)
        previous = history[-1] if history and history[-1] != v else None  # the production it replaced, if known
        _finish(settings, get_client(settings), {"op": PRODUCTION, "version": v, "previous": previous,
                                                 "history": history if previous is None and history else [*history, v]})
        done.append(f"version {v} held both @production and @staging: @staging cleared")
    return done


def register(settings: Settings, model_uri: str, tags: dict[str, str], description: str | None = None) -> str:
    """Register a logged model as a new version (lifecycle `testing`) with its tags and description."""
    import mlflow

    mv = call(settings, "register model", mlflow.register_model, model_uri, settings.model_name, tags=tags)
    if description:
        describe_version(settings, mv.version, description)
    return str(mv.version)


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
    prod = alias_version(settings, PRODUCTION)
    if prod is None or str(prod.version) == str(version):  # the first model (or a resumed job that moved it)
        promote(settings, version, PRODUCTION)
        return "production"
    if hold:
        _set_lifecycle(settings, str(version), "testing", hold_reasons="; ".join(hold))
        return "testing"
    promote(settings, version, STAGING)
    return "canary"
