"""Run the policies side by side (one process each, two at a time on two cores) and put the figures together: the
result JSON, a plot, a dashboard page and an MLflow run per policy."""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from intelrouter.config import Settings
from simulation.data import cut, load
from simulation.loop import Options, Run, World, policy_overrides, run_policy
from simulation.measure import Judge
from simulation.people import Teacher
from simulation.summary import summarise

Tick = Callable[[str, int], None]


def build_world(options: Options, settings: Settings) -> World:
    """Load and cut the dataset, fit the teacher on its part, set up the held-out judge."""
    name, frame, oos = load(options.dataset)
    parts = cut(name, frame, oos, options.seed_per_label, options.teacher_share, options.random_state)
    teacher = Teacher.fit(parts.teacher, settings, oos, random_state=options.random_state)
    return World(parts, teacher, Judge(parts.heldout, oos, settings.gate_tolerance))


def _worker(policy: str, world: World, options: Options, overrides: dict[str, Any], queue: Any) -> Run:
    quiet()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the command's result (--json): libraries print elsewhere
        return run_policy(policy, world, options, overrides, lambda n: queue.put((policy, n)))


def quiet() -> None:
    """MLflow's and Alembic's notices (registrations, migrations) are not the simulation's output."""
    for name in ("mlflow", "alembic", "httpx", "intelrouter.serving"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_policies(world: World, options: Options, settings: Settings, policies: Sequence[str], workdir: Path,
                 tick: Tick, jobs: int = 2, database_urls: dict[str, str] | None = None) -> dict[str, Run]:
    """Every policy on the same data and seed, `jobs` at a time in their own processes (each its own store)."""
    overrides = {p: policy_overrides(settings, workdir / p, (database_urls or {}).get(p)) for p in policies}
    if jobs <= 1:
        quiet()
        with contextlib.redirect_stdout(sys.stderr):
            return {p: run_policy(p, world, options, overrides[p], lambda n, p=p: tick(p, n)) for p in policies}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        stop = threading.Event()

        def relay() -> None:
            while not stop.is_set() or not queue.empty():
                try:
                    policy, n = queue.get(timeout=0.2)
                except Exception:  # noqa: BLE001 - queue.Empty, or the manager going away at the end
                    continue
                tick(policy, n)

        relay_thread = threading.Thread(target=relay, daemon=True)
        relay_thread.start()
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = {p: pool.submit(_worker, p, world, options, overrides[p], queue) for p in policies}
                return {p: f.result() for p, f in futures.items()}
        finally:
            stop.set()
            relay_thread.join(timeout=5)


def simulate(options: Options, settings: Settings, policies: Sequence[str], workdir: Path, tick: Tick,
             jobs: int = 2, database_urls: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole simulation: the world, every policy, the summary (JSON-ready)."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    world = build_world(options, settings)
    if database_urls is None:
        database_urls = policy_databases(settings, policies, time.strftime("%Y%m%d%H%M%S"))
    runs = run_policies(world, options, settings, policies, workdir, tick, jobs, database_urls)
    result = summarise(runs, options, world, settings)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def write_outputs(result: dict[str, Any], workdir: Path, settings: Settings) -> dict[str, Path]:
    """result.json, simulation.png, simulation.html, and an MLflow run per policy in the configured tracking store."""
    from simulation.outputs import log_to_mlflow, write_page, write_plot

    json_path = workdir / "result.json"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    paths = {"json": json_path, "plot": write_plot(result, workdir / "simulation.png"),
             "page": write_page(result, workdir / "simulation.html")}
    log_to_mlflow(result, paths, settings)
    return paths


def policy_databases(settings: Settings, policies: Sequence[str], tag: str) -> dict[str, str]:
    """On PostgreSQL, a fresh database per policy on the configured server (named after it); on SQLite, none (each
    policy gets a file under its own directory)."""
    if not settings.db_url.startswith("postgresql"):
        return {}
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    base = make_url(settings.db_url)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    urls = {}
    try:
        with admin.connect() as conn:
            for policy in policies:
                name = f"{base.database}_sim_{tag}_{policy}"[:63]
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                urls[policy] = base.set(database=name).render_as_string(hide_password=False)
    finally:
        admin.dispose()
    return urls
