"""Benchmark `intelrouter demo`: two runs in a row on a fresh data dir, against the floor of ephemeral Prefect.

The anchor, measured in the same session, is a fresh process that starts ephemeral Prefect and runs one
empty flow (what every demo pays before its first step). Prints a markdown block for BENCHMARKS.md.

    .venv/bin/python bench/demo.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from intelrouter.config import telemetry_off

BUDGET_S = 180.0
ANCHOR = """
from prefect import flow

@flow
def empty() -> int:
    return 1

assert empty() == 1
"""


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "PREFECT_", "MLFLOW_TRACKING"))}
    env.update({"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **extra})
    return telemetry_off(env)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one command (it must succeed)."""
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    """Measure the anchor and two demo runs; print the markdown block."""
    with tempfile.TemporaryDirectory(prefix="intelrouter-bench-demo-") as tmp:
        root = Path(tmp)
        anchor = timed([sys.executable, "-c", ANCHOR], _env({"PREFECT_HOME": str(root / "anchor-prefect")}))
        env = _env({"INTELROUTER_DATA_DIR": str(root / "data")})
        cli = [sys.executable, "-m", "cli", "demo"]
        runs = [timed(cli, env) for _ in range(2)]
        summaries = [json.loads(p.read_text()) for p in sorted((root / "data" / "logs").glob("demo-*.json"))]
    print("| what | wall s | × anchor | within 180 s |")
    print("|---|---:|---:|---|")
    print(f"| anchor: fresh process, ephemeral Prefect, one empty flow | {anchor:.1f} | 1.0 | |")
    for i, (seconds, summary) in enumerate(zip(runs, summaries, strict=True), start=1):
        versions = ", ".join(f"v{v['semver']} {v['lifecycle']}" for v in summary["versions"])
        decisions = " → ".join(d["action"] for d in summary["canary"]) or "no canary"
        print(f"| demo run {i}: {summary['routed']} routed, {summary['feedback']} feedback; {versions}; "
              f"canary {decisions} | {seconds:.1f} | {seconds / anchor:.1f} | "
              f"{'yes' if seconds < BUDGET_S else 'NO'} |")


if __name__ == "__main__":
    main()
