"""Retraining on events (issue 17): the capture and Label Studio sync flows ask, a deployment trigger runs `train`.

`ask_for_retrain` runs `intelrouter.retrain.check` at the end of those flows; when a retrain is due it emits the
Prefect event `intelrouter.retrain.requested` (resource: the registered model, payload: the reasons) and stamps
the request in the registry. `retrain_trigger` is the `train` deployment's trigger (flows/deploy.py, prefect.yaml):
on that event it runs the training flow with `force=true` and the reasons, at most once per cool-down — the
trigger's own `within` window, so two flows asking at once still start one run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import TRACKING
from intelrouter import retrain
from intelrouter.config import Settings

TRIGGER_NAME = "intelrouter-retrain-on-events"


def retrain_trigger(settings: Settings) -> Any:
    """The `train` deployment's trigger: a forced training run per retrain event, at most one per cool-down."""
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=TRIGGER_NAME, description="Train when drift is alerted or enough new human labels arrived.",
        expect={retrain.EVENT}, match={"prefect.resource.id": retrain.resource_id(settings)},
        posture="Reactive", threshold=1, within=timedelta(hours=settings.retrain_cooldown_hours),
        parameters={"force": True, "reason": "{{ event.payload.reason }}"},
    )


def server_configured() -> bool:
    """Whether flows talk to a Prefect server (PREFECT_API_URL): an ephemeral one has no deployment to trigger."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@task(cache_policy=NO_CACHE, **TRACKING)
def ask_for_retrain(settings: Settings, alert_kinds: list[str]) -> dict[str, Any]:
    """Emit a retrain event when drift is alerted or enough new human labels arrived (cool-down and canary aside)."""
    from prefect.events import emit_event

    logger = get_run_logger()
    found = retrain.check(settings, alert_kinds)
    out = found.as_dict() | {"emitted": False}
    if found.due and not server_configured():
        out["summary"] = (f"{found.summary}; no Prefect server (PREFECT_API_URL) runs deployments here: "
                          "run `intelrouter flow run train --force`")
    elif found.due:
        emit_event(retrain.EVENT, resource={"prefect.resource.id": retrain.resource_id(settings),
                                            "prefect.resource.name": settings.model_name},
                   payload={"reason": "; ".join(found.reasons), "reasons": found.reasons,
                            "new_labels": found.new_labels, "drift": found.drift})
        retrain.record_request(settings)
        out["emitted"] = True
    logger.info(out["summary"])
    create_markdown_artifact(f"Retrain event {'**emitted**' if out['emitted'] else 'not emitted'}: {out['summary']}",
                             key="intelrouter-retrain-check", description="Retrain on events")
    return out
