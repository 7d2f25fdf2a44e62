"""What the flows share: settings from JSON-friendly overrides, Prefect's environment, the retry rule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from intelrouter.config import Settings, load_settings, telemetry_off
from intelrouter.errors import RegistryError, StoreError
from intelrouter.labelstudio import LabelStudioUnavailable

# Failures of the outside world worth retrying; a bad setting, a refused token or too little data fail at once.
TRANSIENT = (StoreError, RegistryError, LabelStudioUnavailable, ConnectionError, TimeoutError)


def prefect_env(home: Path | str | None = None) -> None:
    """Set Prefect's environment before it is imported; with `home`, a private PREFECT_HOME there."""
    telemetry_off()
    defaults = {
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "intelrouter",  # library warnings (alerts, skips) reach the run logs
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # ... and outside a flow run stay local quietly
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if home is not None:
        os.environ["PREFECT_HOME"] = str(Path(home).resolve())


def settings_from(overrides: dict[str, Any] | None) -> Settings:
    """The settings a flow run uses: the environment plus the run's overrides (flow parameters stay JSON)."""
    return load_settings(**(overrides or {}))


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only when the database, the tracking server or Label Studio failed."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result()
        except BaseException as raised:  # noqa: BLE001 - the state's exception is what we classify
            exc = raised
    return isinstance(exc, TRANSIENT)


def retrying(*delays: int) -> dict[str, Any]:
    """Task options: retry transient failures after each of `delays` seconds."""
    return {"retries": len(delays), "retry_delay_seconds": list(delays), "retry_condition_fn": transient}


DATABASE = retrying(2, 10, 30)
TRACKING = retrying(5, 20, 60)
LABEL_STUDIO = retrying(10, 60, 180)
