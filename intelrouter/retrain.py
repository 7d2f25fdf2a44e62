"""Retraining on events beside the clock: when drift is alerted, or enough new human labels arrived, with a cool-down.

`check` reads the store and the registry and says whether a retrain is due now, with its reasons, or why not;
`due` is the pure rule. When one is due, the flows (`flows/events.py`) emit the Prefect event `EVENT` and call
`record_request`, which stamps the time in a registered-model tag: that starts the cool-down and restarts the
count of new labels. A Prefect deployment trigger on the `train` deployment turns the event into a forced
training run. The cron schedules stay as they are.

- Drift (`DRIFT_KINDS` among the monitoring report's alerts) asks for a retrain only when new ground truth
  waits: a retrain on the same rows would learn nothing new.
- New labels are human labels (feedback, override, Label Studio) no version has trained on, stored since the
  last event-started retrain.
- Nothing is asked while a canary runs (a newer candidate is being judged already), before a first
  @production, or within `retrain_cooldown_hours` of the last request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from intelrouter import registry, store
from intelrouter.config import Settings
from intelrouter.errors import NotFoundError
from intelrouter.names import HUMAN_SOURCES, PRODUCTION, STAGING

EVENT = "intelrouter.retrain.requested"  # the Prefect event the deployment trigger expects
REQUEST_TAG = "retrain_requested_at"  # registered-model tag: when an event last asked for a retrain (naive UTC ISO)
DRIFT_KINDS = ("label_drift", "confidence_drift", "unseen_words", "calibration_drift")


def resource_id(settings: Settings) -> str:
    """The Prefect resource the retrain events are about: the registered model."""
    return f"intelrouter.model.{settings.model_name}"


@dataclass(frozen=True)
class RetrainCheck:
    """Whether an event-started retrain is due, why, and the numbers behind it."""

    due: bool
    reasons: list[str] = field(default_factory=list)  # what calls for a retrain (it is due when none is blocked)
    blocked: str | None = None  # why nothing is asked now
    drift: list[str] = field(default_factory=list)  # the drift alerts seen
    new_labels: int = 0
    samples_waiting: int = 0
    last_request: str | None = None
    checked_at: str = ""

    @property
    def summary(self) -> str:
        """One line: what is asked for, or why not."""
        if self.due:
            return "retrain requested: " + "; ".join(self.reasons)
        return f"no retrain requested: {self.blocked}" + (f" (reasons: {'; '.join(self.reasons)})"
                                                         if self.reasons else "")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, with the summary."""
        return {**asdict(self), "summary": self.summary}


def due(*, drift: list[str], new_labels: int, samples_waiting: int, settings: Settings, production: str | None,
        canary: str | None, last_request: datetime | None, now: datetime) -> tuple[list[str], str | None]:
    """The rule: (reasons to retrain, why nothing is asked now or None); pure."""
    reasons, notes = [], []
    if drift and settings.retrain_on_drift:
        if samples_waiting > 0:
            reasons.append(f"drift alerted ({', '.join(drift)}) with {samples_waiting} new samples to learn from")
        else:
            notes.append(f"drift alerted ({', '.join(drift)}) but no new ground truth waits: a retrain would learn "
                         "nothing new")
    if settings.retrain_on_labels and new_labels >= settings.retrain_on_labels:
        reasons.append(f"{new_labels} new human labels since the last training (trigger {settings.retrain_on_labels})")
    if not reasons:
        notes.append(f"{new_labels} new human labels (trigger {settings.retrain_on_labels or 'off'})"
                     + ("" if drift else ", no drift alerted"))
        return [], "; ".join(notes)
    if production is None:
        return reasons, "no @production yet: the first model comes from `intelrouter train` or the schedule"
    if canary is not None:
        return reasons, f"v{canary} is on @staging: a newer candidate is being judged already"
    cooldown = timedelta(hours=settings.retrain_cooldown_hours)
    if last_request is not None and now - last_request < cooldown:
        return reasons, (f"cool-down: an event asked for a retrain at {last_request.isoformat(timespec='seconds')}, "
                         f"the next may come from {(last_request + cooldown).isoformat(timespec='seconds')}")
    return reasons, None


def last_request(settings: Settings) -> datetime | None:
    """When an event last asked for a retrain (the registered-model tag), if ever."""
    client = registry.get_client(settings)
    try:
        model = registry.call(settings, "registered model", client.get_registered_model, settings.model_name)
    except NotFoundError:
        return None
    value = (model.tags or {}).get(REQUEST_TAG)
    return store.parse_when(value, REQUEST_TAG) if value else None


def new_human_labels(settings: Settings, since: datetime | None) -> tuple[int, int]:
    """(human labels no version trained on, stored after `since`; every approved sample no version trained on)."""
    m = store.ml_data
    where = [m.c.trained_version.is_(None), m.c.source.in_(HUMAN_SOURCES)]
    if since is not None:
        where.append(m.c.created_at > since)
    with store.connect(settings) as conn:
        labels = conn.execute(select(func.count()).select_from(m).where(*where)).scalar() or 0
        return int(labels), store.samples_waiting(conn)


def check(settings: Settings, alert_kinds: Iterable[str] = (), now: datetime | None = None) -> RetrainCheck:
    """Is an event-started retrain due now? Reads the aliases, the last request and the store."""
    now = now or store.utcnow()
    drift = [k for k in dict.fromkeys(alert_kinds) if k in DRIFT_KINDS]
    aliases = {alias: registry.alias_version(settings, alias) for alias in (PRODUCTION, STAGING)}
    last = last_request(settings) if aliases[PRODUCTION] is not None else None
    labels, waiting = new_human_labels(settings, last)
    reasons, blocked = due(drift=drift, new_labels=labels, samples_waiting=waiting, settings=settings,
                           production=str(aliases[PRODUCTION].version) if aliases[PRODUCTION] else None,
                           canary=str(aliases[STAGING].version) if aliases[STAGING] else None, last_request=last,
                           now=now)
    return RetrainCheck(bool(reasons) and blocked is None, reasons, blocked, drift, labels, waiting,
                        last.isoformat(timespec="seconds") if last else None, now.isoformat(timespec="seconds"))


def record_request(settings: Settings, now: datetime | None = None) -> None:
    """Stamp an event-started retrain request in the registry: starts the cool-down, restarts the label count."""
    client = registry.get_client(settings)
    stamp = (now or store.utcnow()).isoformat()  # to the microsecond: labels stored in the same second come after
    registry.call(settings, "registered model", client.set_registered_model_tag, settings.model_name, REQUEST_TAG,
                  stamp)
