"""The canary-check flow (hourly) and `intelrouter flow run` against the same Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flow_fixtures import artifacts, router_traffic, run

from intelrouter import lifecycle, registry
from intelrouter.config import Settings


def test_canary_check_flow_raises_the_share_and_logs_it(flow_settings: Settings) -> None:
    from flows.canary_check import canary_check

    s = flow_settings
    client = registry.get_client(s)
    client.create_registered_model(s.model_name)
    (s.data_dir / "model").mkdir(parents=True, exist_ok=True)
    v1, v2 = (str(client.create_model_version(s.model_name, source=str(s.data_dir / "model")).version)
              for _ in range(2))
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    router_traffic(s, 10, version=v2, variant="staging", correct=10, tag="s", hours_ago=2)
    router_traffic(s, 10, version=v1, variant="production", correct=10, tag="p", hours_ago=1)

    waiting, _ = run(canary_check)  # 48 h window by default
    assert waiting["decision"]["action"] == "wait" and registry.canary_share(s) == 0.1
    result, run_id = run(canary_check, overrides={"canary_window_hours": 1, "canary_min_feedback": 10})
    assert result["decision"]["action"] == "raise" and result["applied"]
    assert registry.canary_share(s) == 0.5
    assert json.loads(Path(result["path"]).read_text())["decision"]["share"] == 0.5
    assert "intelrouter rollback" in artifacts(run_id)["intelrouter-canary"].data


# --- the CLI against the same server ------------------------------------------------------------------------


def test_cli_flow_run(flow_settings: Settings, prefect_server: str) -> None:
    router_traffic(flow_settings, 4)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    out = subprocess.run([sys.executable, "-m", "cli", "flow", "run", "capture"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout[out.stdout.index("{"):])["daily"]["triaged"] == 4
    bad = subprocess.run([sys.executable, "-m", "cli", "flow", "run", "nightly"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("error: unknown flow 'nightly': use one of capture, labelstudio-sync, export, "
                                  "train, canary-check, retrain-loop")
