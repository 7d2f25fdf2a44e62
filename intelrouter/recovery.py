"""Recovery after a crash, run under the lifecycle lock by every training start and canary check.

It finishes a lifecycle move a crash cut short (`lifecycle.settle`), rejects a version whose training job stopped
between registering it and moving it (no job is in flight while the lock is held), and releases the `ml_data` rows
of versions that will never serve: rows marked with a rejected version (gate passed, then rolled back as a canary
or from production, or interrupted) or with a version that was never registered (a job stopped between marking
its rows and registering) count as unused again, so the next training takes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select, update

from intelrouter import lifecycle, locks, registry, registry_mirror, store
from intelrouter.config import Settings
from intelrouter.names import ALIASES

log = logging.getLogger(__name__)

JOB_TAG = "job_key"  # on every run and version a training job made: which job (a retry carries the same key)
INTERRUPTED = "interrupted: its training stopped after registering it, before the gate decision moved it"


@dataclass
class Recovery:
    """What a recovery did."""

    moves: list[str] = field(default_factory=list)  # lifecycle moves finished
    rejected: list[str] = field(default_factory=list)  # versions of interrupted jobs, now rejected
    released: dict[str, int] = field(default_factory=dict)  # semver -> rows marked unused again

    def __bool__(self) -> bool:
        return bool(self.moves or self.rejected or self.released)


def recover(settings: Settings, keep: str | None = None, wait_seconds: float | None = None) -> Recovery:
    """Bring the registry and the training marks back to a consistent state; `keep`: a version a job resumes."""
    with locks.training_lock(settings, wait_seconds, purpose="recovery"):
        done = Recovery(moves=lifecycle.settle(settings))
        done.rejected = reject_interrupted(settings, keep)
        done.released = release_rows(settings)
    if done.rejected:
        registry_mirror.refresh(settings)  # the moves refresh it themselves; these rejections are tags alone
    if done:
        log.warning("recovered the lifecycle after a crash: %s", done)
    return done


def reject_interrupted(settings: Settings, keep: str | None = None) -> list[str]:
    """Reject versions a training job registered but never moved (still `testing`, behind no alias, and not held
    there on purpose by the shadow replay: those carry `hold_reasons`)."""
    aliased = {str(mv.version) for mv in (registry.alias_version(settings, a) for a in ALIASES) if mv is not None}
    rejected = []
    for mv in registry.list_model_versions(settings):
        v, tags = str(mv.version), mv.tags
        held = "hold_reasons" in tags
        if tags.get("lifecycle") == "testing" and JOB_TAG in tags and not held and v not in aliased and v != keep:
            registry.tag_version(settings, v, {"lifecycle": "rejected", "rejected_reason": INTERRUPTED})
            rejected.append(v)
    return rejected


def release_rows(settings: Settings) -> dict[str, int]:
    """Unmark the rows of rejected versions and of versions never registered; returns rows released per semver."""
    m = store.ml_data
    with store.connect(settings) as conn:
        marked = set(conn.execute(select(m.c.trained_version).where(m.c.trained_version.is_not(None))
                                  .distinct()).scalars())
    if not marked:
        return {}
    lifecycle = {mv.tags.get("semver"): mv.tags.get("lifecycle") for mv in registry.list_model_versions(settings)}
    dead = sorted(v for v in marked if lifecycle.get(v, "rejected") == "rejected")
    released = {}
    with store.connect(settings) as conn:
        for semver in dead:
            released[semver] = conn.execute(update(m).where(m.c.trained_version == semver)
                                            .values(trained_version=None)).rowcount
    return released
