"""Commands that run the loop: serve, human review, flows, the canary, monitoring, schedules, the demo."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from cli.app import (
    JsonOpt,
    LimitOpt,
    ProjectOpt,
    app,
    canary_app,
    echo,
    echo_json,
    flow_app,
    get_settings,
    review_app,
)
from intelrouter.errors import IntelRouterError
from intelrouter.names import PRODUCTION


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes; each loads the models itself.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    allow_unauthenticated: Annotated[bool, typer.Option(
        "--allow-unauthenticated", help="Serve on a non-loopback address without INTELROUTER_API_KEY: anyone who "
        "reaches the port may then write training labels.")] = False,
) -> None:
    """Serve the router: POST /route (/api/query), /feedback, /override; GET /health, /metrics."""
    import uvicorn

    from intelrouter.config import secret
    from intelrouter.errors import ConfigError
    from intelrouter.salt import identifier_salt

    settings = get_settings()  # a bad setting is one error line here, not a traceback in every worker
    if not is_loopback(host) and not secret(settings.api_key) and not allow_unauthenticated:
        raise ConfigError(
            f"refusing to serve on {host} without INTELROUTER_API_KEY: anyone who reaches it could rewrite training "
            "labels through /feedback and /override; set the key, or pass --allow-unauthenticated to accept that")
    identifier_salt(settings)  # first start: the salt is created (or refused) here, as one line
    if workers > 1:
        # every worker opens the registry as it starts: open it once here first, so that two workers never create a
        # new SQLite registry's tables at the same time ("duplicate column name"); unreachable is the workers' call
        from intelrouter import registry

        with contextlib.suppress(IntelRouterError):
            registry.alias_version(settings, PRODUCTION)
    from serving.protocol import CoalescingHttpToolsProtocol

    # httptools with each answer's head and body in one write (serving/protocol.py)
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level=log_level, http=CoalescingHttpToolsProtocol)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@review_app.command("setup")
def review_setup(
    title: Annotated[str, typer.Option(help="Project title, used when no project id is set.")] = "IntelRouter review",
) -> None:
    """Create the Label Studio review project (or update the configured one's labels) and print its id."""
    from intelrouter.review_project import setup_project

    settings = get_settings()
    project_id = setup_project(settings, title=title)
    echo(f"project {project_id} ready at {settings.label_studio_url.rstrip('/')}/projects/{project_id}")
    if settings.label_studio_project_id != project_id:
        echo(f"set INTELROUTER_LABEL_STUDIO_PROJECT_ID={project_id}")


@review_app.command("push")
def review_push(limit: LimitOpt = None, project_id: ProjectOpt = None) -> None:
    """Send each question waiting for review to Label Studio once (priority first, most useful first)."""
    from intelrouter.review_push import push

    r = push(get_settings(), limit=limit, project_id=project_id)
    adopted = f"; adopted {r.adopted} left by an interrupted push" if r.adopted else ""
    echo(f"pushed {r.pushed} tasks to project {r.project_id} ({r.queued} queries; {r.joined} joined open tasks; "
         f"{r.resolved} settled from known answers){adopted}")


@review_app.command("pull")
def review_pull(limit: LimitOpt = None, project_id: ProjectOpt = None) -> None:
    """Fetch answers given since the last pull: labels into ml_data, queries approved or rejected."""
    from intelrouter.review_pull import pull

    r = pull(get_settings(), limit=limit, project_id=project_id)
    echo(f"pulled {r.written} answers from project {r.project_id}: {r.approved} approved, {r.rejected} none of "
         f"these, {r.skipped} skipped; {r.disagreements} disagree with the model; {r.unchanged} already pulled; "
         f"{r.queries} queries settled")


@review_app.command("sync")
def review_sync(limit: LimitOpt = None, project_id: ProjectOpt = None) -> None:
    """Pull the answers, then push what waits for review: both steps in one command."""
    from intelrouter import review

    r = review.sync(get_settings(), limit=limit, project_id=project_id)
    echo(f"pulled {r.pull.written} answers ({r.pull.approved} approved, {r.pull.rejected + r.pull.skipped} "
         f"rejected); pushed {r.push.pushed} tasks to project {r.push.project_id}")


FLOWS = {
    "capture": "flows.capture:capture",
    "labelstudio-sync": "flows.labelstudio_sync:labelstudio_sync",
    "export": "flows.export:export",
    "train": "flows.train:train",
    "canary-check": "flows.canary_check:canary_check",
    "retrain-loop": "flows.retrain_loop:retrain_loop",
}


@flow_app.command("run")
def flow_run(
    name: Annotated[str, typer.Argument(help="capture | labelstudio-sync | export | train | canary-check | "
                                             "retrain-loop")],
    force: Annotated[bool, typer.Option(help="train: train even below the weekly trigger.")] = False,
) -> None:
    """Run one flow now, as the schedule would; prints its result as JSON."""
    from flows.common import prefect_env
    from intelrouter.errors import InputError

    if name not in FLOWS:
        raise InputError(f"unknown flow {name!r}: use one of {', '.join(FLOWS)}")
    get_settings()  # a bad setting is one error line before Prefect starts
    prefect_env()
    from flows.deploy import load_flow

    result = load_flow(FLOWS[name])(**({"force": force} if name == "train" else {}))
    echo_json(result)


@canary_app.command("check")
def canary_check(
    dry_run: Annotated[bool, typer.Option(help="Decide and log, change nothing.")] = False,
) -> None:
    """Compare @staging with @production on feedback: promote, raise the share a step, roll back, or wait."""
    from intelrouter.canary import check

    report = check(get_settings(), dry_run=dry_run)
    decision = report.decision
    echo(f"{decision['action']}{'' if report.applied or decision['action'] in ('wait', 'none') else ' (dry run)'}: "
         f"{decision['reason']}")
    if report.path:
        echo(f"log: {report.path}")


@app.command("report")
def report(
    days: Annotated[int | None, typer.Option(help="Days to look back (default: INTELROUTER_REPORT_DAYS).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Monitoring: per day and per model version, alerts (logged, and POSTed to the webhook when set)."""
    from intelrouter.report import run_report, to_markdown

    rep = run_report(get_settings(), days=days)
    if as_json:
        echo_json(rep.as_dict())
    else:
        echo(to_markdown(rep) + f"\nreport: {rep.path}")


@app.command("dashboard")
def dashboard_cmd(
    output: Annotated[Path, typer.Option(help="HTML file to write (self-contained, opens offline).")]
    = Path("dashboard.html"),
    days: Annotated[int | None, typer.Option(help="Days to look back (default: INTELROUTER_REPORT_DAYS).")] = None,
) -> None:
    """Write the monitoring dashboard (charts of the loop over the report window) as one offline HTML file."""
    from intelrouter.dashboard import write_html

    echo(f"dashboard: {write_html(get_settings(), output, days=days)}")


@app.command("deploy")
def deploy(
    api_url: Annotated[str | None, typer.Option(help="Prefect server API, e.g. http://127.0.0.1:4200/api "
                                                     "(default: PREFECT_API_URL).")] = None,
) -> None:
    """Serve every flow on its schedule against a Prefect server (blocks; schedules survive a restart)."""
    from flows.common import prefect_env

    settings = get_settings()
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
    prefect_env()
    from flows.deploy import serve_all

    serve_all(settings)


@app.command("demo")
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Where the demo keeps everything (default: "
                                                       "INTELROUTER_DATA_DIR, .intelrouter).")] = None,
) -> None:
    """The whole loop in a minute on the embedded defaults (SQLite, local MLflow, ephemeral Prefect); re-runnable."""
    from cli.demo import run_demo
    from intelrouter.config import load_settings

    run_demo(load_settings(data_dir=data_dir) if data_dir else get_settings())

