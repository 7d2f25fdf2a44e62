"""`intelrouter demo`: the whole loop in a few minutes on the embedded defaults, runnable again and again.

SQLite and a local MLflow store under the data dir, Prefect in ephemeral mode with its home there too.
Seeds ground truth from the built-in sample set, trains and promotes a first version, serves it
in-process, routes traffic, simulates feedback, triages, retrains, runs the new version as a canary on
@staging and lets the canary check decide. A second run continues from where the first stopped.
This module is an application on top of the library: it drives flows/ and serving/ (imported lazily).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError
from intelrouter.names import PRODUCTION, STAGING

SAMPLE_FILE = "demo_queries.csv"
ROUTES = {  # label -> where the caller sends the query
    "easy": "small-llm", "medium": "mid-llm", "hard": "large-llm", "order_food": "food-service",
    "track_order": "orders-api", "cancel_order": "orders-api", "weather": "weather-api",
}
SEED_SHARE = 0.5  # half the sample set is ground truth at the start; the rest is the users' traffic
FEEDBACK_RATE = 0.8  # share of answers a simulated user labels
ESCALATION_RATE = 0.05  # share of answers the simulated caller hands to a human whatever the route
ROUND_SIZE = 200  # queries per traffic round
CANARY_ROUNDS = 4  # traffic rounds the canary gets at most before the demo stops
PREFIXES = ("", "", "", "hey, ", "please ", "quick question: ", "hi! ")
SUFFIXES = ("", "", "", "?", " please", " thanks")


def sample_set() -> list[tuple[str, str]]:
    """The built-in sample set: (text, label) over difficulty tiers and a few intents."""
    with resources.files("cli").joinpath(SAMPLE_FILE).open(encoding="utf-8") as fh:
        return [(row["text"], row["label"]) for row in csv.DictReader(fh)]


def split_samples(samples: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A stable split of the sample set into seed ground truth and the traffic pool."""
    from intelrouter.keys import bucket

    seed = [s for s in samples if bucket("demo:" + s[0]) < SEED_SHARE]
    pool = [s for s in samples if bucket("demo:" + s[0]) >= SEED_SHARE]
    return seed, pool


def demo_overrides(settings: Settings) -> dict[str, Any]:
    """The demo's settings, as JSON for flow parameters: embedded stores under the data dir, a short canary."""
    data_dir = settings.data_dir.resolve()
    return {
        "data_dir": str(data_dir),
        "database_url": None,
        "mlflow_tracking_uri": f"sqlite:///{data_dir / 'mlflow.db'}",
        "routes": ROUTES,
        "canary_window_hours": 0,  # the demo cannot wait 48 h: judge the canary as soon as it has feedback
        "canary_min_feedback": 10,
        "alert_min_samples": 10,
    }


@dataclass
class DemoResult:
    """What one demo run did."""

    data_dir: str
    seconds: float = 0.0
    seeded: int = 0
    routed: int = 0
    feedback: int = 0
    versions: list[dict[str, Any]] = field(default_factory=list)
    canary: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    review_backlog: int = 0
    logs: list[str] = field(default_factory=list)


class Traffic:
    """Simulated users: route queries from the traffic pool in-process, label most answers."""

    def __init__(self, settings: Settings, pool: list[tuple[str, str]], run_id: str) -> None:
        self.settings, self.pool, self.run_id = settings, pool, run_id
        self.rng = random.Random(run_id)
        self.callers = random.Random(f"{run_id}-callers")  # apart, so the users' draws stay as they were
        self.by_variant: dict[str, int] = {}

    def _query(self, round_no: int, i: int) -> tuple[str, str, str]:
        text, label = self.rng.choice(self.pool)
        text = f"{self.rng.choice(PREFIXES)}{text}{self.rng.choice(SUFFIXES)}"
        return text, label, f"demo-{self.run_id}-{round_no}-{i}"

    def round(self, round_no: int, n: int, tick: Callable[[], None]) -> tuple[int, int]:
        """Route `n` queries through POST /route, report each outcome (POST /outcome) and post feedback for most;
        returns (routed, labelled)."""
        import warnings

        from serving.app import create_app

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # starlette's notice about its httpx-based test client
            from fastapi.testclient import TestClient

        labelled = 0
        with TestClient(create_app(self.settings)) as client:
            answers = []
            for i in range(n):
                text, truth, user = self._query(round_no, i)
                r = client.post("/route", json={"text": text, "user_id": user, "language": "en"})
                r.raise_for_status()
                body = r.json()
                self.by_variant[body["variant"]] = self.by_variant.get(body["variant"], 0) + 1
                answers.append((body["query_id"], truth, body["route"]))
                tick()
            # the caller reports what it did with each answer: it follows the route (the fallback when UNCERTAIN)
            outcomes = [{"query_id": q, "route_taken": "human" if self.callers.random() < ESCALATION_RATE else r}
                        for q, _, r in answers]
            client.post("/outcome", json={"outcomes": outcomes}).raise_for_status()
            for query_id, truth, _ in answers:
                if self.rng.random() < FEEDBACK_RATE:
                    client.post("/feedback", json={"query_id": query_id, "label": truth}).raise_for_status()
                    labelled += 1
                tick()
        return n, labelled


@contextlib.contextmanager
def quiet(log_file: Path) -> Iterator[None]:
    """Send what MLflow and Prefect print (registration notices, server start-up) to the demo's log file."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        with log_file.open("a", encoding="utf-8") as fh:
            fh.write(buffer.getvalue())


def _prepare_environment(settings: Settings) -> None:
    """Ephemeral Prefect with its home under the data dir, and no telemetry; set before Prefect is imported."""
    from flows.common import prefect_env

    os.environ.pop("PREFECT_API_URL", None)  # the demo runs its own ephemeral Prefect
    prefect_env(settings.data_dir / "prefect")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "httpx", "intelrouter.serving", "serving"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_foreign_data(settings: Settings, labels: set[str]) -> None:
    """Refuse a data dir whose ground truth is not the demo's: the demo must never mix with real data."""
    from sqlalchemy import select

    from intelrouter import store
    from intelrouter.errors import InputError

    with store.connect(settings) as conn:
        found = set(conn.execute(select(store.ml_data.c.label).distinct().limit(1000)).scalars())
    foreign = sorted(found - labels)
    if foreign:
        raise InputError(f"{settings.data_dir} already holds other ground truth (labels such as {foreign[0]!r}): "
                         "run the demo in a directory of its own, e.g. `intelrouter demo --data-dir .intelrouter-demo`")


def run_demo(settings: Settings, console: Any = None) -> DemoResult:
    """Run the loop once, with a progress bar per step; returns what it did and prints where to look."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from intelrouter import registry
    from intelrouter.config import load_settings

    started = time.perf_counter()
    console = console or Console()
    overrides = demo_overrides(settings)
    settings = load_settings(**overrides)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    _prepare_environment(settings)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_file = settings.logs_dir / f"demo-{stamp}.log"
    result = DemoResult(data_dir=str(settings.data_dir))
    samples = sample_set()
    check_foreign_data(settings, {label for _, label in samples})
    seed, pool = split_samples(samples)
    run_no = len(list(settings.logs_dir.glob("demo-*.json"))) + 1  # seeds the simulated users: runs reproduce
    traffic = Traffic(settings, pool, f"run{run_no}")
    console.print(f"[bold]IntelRouter demo[/bold] in {settings.data_dir} (SQLite, local MLflow, ephemeral Prefect)")

    with Progress(SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:

        def step(description: str, total: int = 1) -> tuple[int, Callable[[], None]]:
            """A new progress bar, and a function that advances it by one."""
            task_id = progress.add_task(description, total=total)
            return task_id, lambda: progress.advance(task_id)

        task_id, tick = step("seed ground truth from the sample set", len(seed))
        result.seeded = _seed(settings, seed)
        progress.update(task_id, completed=len(seed))

        task_id, tick = step("train v1 and promote it (retrain-loop flow)")
        with quiet(log_file):
            from flows.retrain_loop import retrain_loop

            production = registry.alias_version(settings, PRODUCTION)
            if production is None:
                result.versions.append(retrain_loop(overrides=overrides))
                progress.update(task_id, description=f"trained v{result.versions[-1]['semver']} -> "
                                f"{result.versions[-1]['lifecycle']}")
            else:
                progress.update(task_id, description=f"@production is already version {production.version}: "
                                "continue")
            if registry.alias_version(settings, PRODUCTION) is None:
                raise IntelRouterError(f"the first version did not pass the gate: see {settings.logs_dir}/"
                                       "training-router-v*.json")
        tick()

        task_id, tick = step("route traffic through POST /route + feedback", 2 * ROUND_SIZE)
        routed, labelled = traffic.round(0, ROUND_SIZE, tick)
        result.routed += routed
        result.feedback += labelled

        task_id, tick = step("triage, daily + monitoring report (capture flow)")
        with quiet(log_file):
            from flows.capture import capture

            captured = capture(overrides=overrides)
        tick()
        progress.update(task_id, description=f"triaged {captured['daily']['triaged']}: "
                        f"{captured['daily']['needs_review']} wait for review")

        task_id, tick = step("retrain -> gate -> @staging canary (retrain-loop)")
        with quiet(log_file):
            retrained = retrain_loop(overrides=overrides)
        result.versions.append(retrained)
        tick()
        progress.update(task_id, description=f"v{retrained['semver']}: gate "
                        f"{'passed' if retrained['gate_passed'] else 'failed'} -> {retrained['lifecycle']}")

        from flows.canary_check import canary_check

        for round_no in range(1, CANARY_ROUNDS + 1):
            with quiet(log_file):
                staging = registry.alias_version(settings, STAGING)
                share = registry.canary_share(settings)
            if staging is None:
                break
            task_id, tick = step(f"canary round {round_no}: v{staging.version} at {share:.0%} of users",
                                 2 * ROUND_SIZE + 1)
            routed, labelled = traffic.round(round_no, ROUND_SIZE, tick)
            result.routed += routed
            result.feedback += labelled
            with quiet(log_file):
                checked = canary_check(overrides=overrides)
            tick()
            decision = checked["decision"]
            result.canary.append(decision | {"path": checked["path"]})
            progress.update(task_id, description=f"canary round {round_no}: {decision['action']}"
                            + (f" -> {decision['share']:.0%}" if decision.get("share") else ""))
            if decision["action"] in ("promote", "rollback", "none"):
                break

        task_id, tick = step("monitoring report and alerts")
        from intelrouter.report import run_report

        with quiet(log_file):
            rep = run_report(settings)
        result.alerts = [a.message for a in rep.alerts]
        result.review_backlog = rep.review_backlog
        tick()

    result.seconds = round(time.perf_counter() - started, 1)
    result.logs = sorted(str(p) for p in settings.logs_dir.glob("*.json"))
    from intelrouter.jsonfiles import write_report

    summary = write_report(settings, f"demo-{stamp}.json", result.__dict__)
    _print_summary(console, settings, result, traffic.by_variant, summary)
    return result


def _seed(settings: Settings, seed: list[tuple[str, str]]) -> int:
    """Import the seed half of the sample set into ml_data (a re-run adds nothing)."""
    from intelrouter import store
    from intelrouter.groundtruth import insert_labels

    rows = [{"text": text, "label": label, "language": "en"} for text, label in seed]
    with store.connect(settings) as conn:
        return insert_labels(conn, rows, "import", shares=settings.split_shares)


def _print_summary(console: Any, settings: Settings, result: DemoResult, by_variant: dict[str, int],
                   summary: Path) -> None:
    from intelrouter import registry

    data = settings.data_dir.resolve()
    console.print()
    console.print(f"[bold green]done in {result.seconds:.0f} s[/bold green]: seeded {result.seeded} labels, routed "
                  f"{result.routed} queries ({', '.join(f'{k} {v}' for k, v in sorted(by_variant.items()))}), "
                  f"{result.feedback} feedback labels, {result.review_backlog} queries wait for human review")
    for v in result.versions:
        console.print(f"  v{v['semver']} (registry version {v['version']}): gate "
                      f"{'passed' if v['gate_passed'] else 'failed'} -> {v['lifecycle']}, test accuracy "
                      f"{v['metrics'].get('test_accuracy', 0):.1%}")
    for i, d in enumerate(result.canary, start=1):
        console.print(f"  canary check {i}: [bold]{d['action']}[/bold]: {d['reason']}")
    prod, staging = registry.alias_version(settings, PRODUCTION), registry.alias_version(settings, STAGING)
    console.print(f"  now: @production = version {prod.version if prod else '-'}, @staging = "
                  f"{staging.version if staging else '-'}")
    for message in result.alerts:
        console.print(f"  [yellow]alert[/yellow]: {message}")
    env = f"INTELROUTER_DATA_DIR={settings.data_dir}"
    console.print()
    console.print("[bold]Where to look[/bold]")
    console.print(f"  MLflow runs and registry:  mlflow ui --backend-store-uri sqlite:///{data / 'mlflow.db'}")
    console.print(f"  Prefect flow runs:         PREFECT_HOME={data / 'prefect'} prefect server start")
    console.print(f"  reports (JSON):            {settings.logs_dir.resolve()}/  (demo summary: {summary.name})")
    console.print(f"  monitoring:                {env} intelrouter report")
    console.print(f"  models / undo a promotion: {env} intelrouter models | intelrouter rollback")
    console.print("  run the demo again to continue the loop: new traffic, a new version, another canary")
