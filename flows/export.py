"""Export on demand (seed 004): approved ground truth as a JSONL snapshot under DATA_DIR/exports/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import DATABASE, settings_from
from intelrouter.config import Settings
from intelrouter.export import export_jsonl
from intelrouter.store import parse_when, utcnow


def default_output(settings: Settings) -> Path:
    """Where a snapshot goes when no path is given: DATA_DIR/exports/training-YYYYmmdd-HHMMSS.jsonl."""
    return settings.data_dir / "exports" / f"training-{utcnow().strftime('%Y%m%d-%H%M%S')}.jsonl"


@task(cache_policy=NO_CACHE, **DATABASE)
def write_snapshot(settings: Settings, output: Path, filters: dict[str, Any]) -> int:
    """Write the filtered approved rows to `output` (atomically); returns the row count."""
    return export_jsonl(settings, output, **filters)


@flow(name="export")
def export(output: str | None = None, limit: int | None = None, languages: list[str] | None = None,
           min_confidence: float | None = None, since: str | None = None, unused_only: bool = False,
           overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write approved ground truth as JSONL; returns the path and the number of rows."""
    settings = settings_from(overrides)
    path = Path(output) if output else default_output(settings)
    filters = {"limit": limit, "languages": languages, "min_confidence": min_confidence,
               "since": parse_when(since, "since"), "unused_only": unused_only}
    rows = write_snapshot(settings, path, filters)
    get_run_logger().info("exported %d rows to %s", rows, path)
    create_markdown_artifact(f"Exported **{rows}** approved rows to `{path}`.", key="intelrouter-export",
                             description="Training data snapshot")
    return {"path": str(path), "rows": rows}


if __name__ == "__main__":
    export()
