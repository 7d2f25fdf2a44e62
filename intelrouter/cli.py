"""The `intelrouter` command: thin commands over the library. Errors print one line and exit non-zero."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from intelrouter.errors import IntelRouterError

app = typer.Typer(help="IntelRouter: route queries, and keep the router improving from production traffic.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
capture_app = typer.Typer(help="Captured queries: import past conversations, triage.", no_args_is_help=True)
data_app = typer.Typer(help="Ground-truth labels in ml_data.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(capture_app, name="capture")
app.add_typer(data_app, name="data")


def _settings():  # noqa: ANN202 - imported lazily so `--help` stays fast
    from intelrouter.config import load_settings

    return load_settings()


def echo(message: str) -> None:
    """Print one line to stdout."""
    typer.echo(message)


# --- foundation: db, capture, data, export, status -------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the schema migrations to the configured database."""
    from intelrouter import store

    settings = _settings()
    echo(f"database at revision {store.upgrade(settings, revision)}")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the configured database."""
    from intelrouter import store

    echo(store.current_revision(_settings()) or "empty (run `intelrouter db upgrade`)")


@capture_app.command("import")
def capture_import(file: Annotated[Path, typer.Argument(help="JSONL of past conversations.")]) -> None:
    """Import past conversations (text, user_id, language, predicted_label, confidence, provider, ...)."""
    from intelrouter.capture import import_conversations

    read, new = import_conversations(_settings(), file)
    echo(f"imported {new} new queries ({read - new} already present) from {file}")


@capture_app.command("triage")
def capture_triage(
    since: Annotated[str | None, typer.Option(help="Start of the window (YYYY-MM-DD or ISO time), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="End of the window, exclusive.")] = None,
) -> None:
    """Auto-approve trusted confident queries, queue the rest for review, write the daily report."""
    from intelrouter.store import parse_when
    from intelrouter.triage import triage

    report = triage(_settings(), parse_when(since, "--since"), parse_when(until, "--until"))
    echo(
        f"triaged {report.triaged} of {report.captured} captured: {report.auto_approved} auto-approved, "
        f"{report.needs_review} need review; {report.approved_waiting_for_training} approved waiting for training"
        + (" (ALERT: time to train)" if report.alert else "")
    )
    echo(f"report: {report.report_path}")


@data_app.command("import")
def data_import(
    file: Annotated[Path, typer.Argument(help="CSV (with a header) or JSONL file of labelled examples.")],
    text_col: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    label_col: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    split_col: Annotated[str | None, typer.Option(help="Optional column with train/val/test.")] = None,
) -> None:
    """Seed ml_data with labelled examples (your own, or CLINC150/BANKING77 from shared/datasets)."""
    from intelrouter.labels import import_labels

    read, new = import_labels(_settings(), file, text_col, label_col, split_col)
    echo(f"imported {new} new labelled rows ({read - new} already present) from {file}")


@app.command("export")
def export(
    output: Annotated[Path, typer.Option(help="JSONL file to write.")],
    limit: Annotated[int | None, typer.Option(help="Write at most N rows.")] = None,
    languages: Annotated[str | None, typer.Option(help="Comma-separated languages, e.g. en,hinglish.")] = None,
    min_confidence: Annotated[float | None, typer.Option(help="Drop machine labels below this confidence.")] = None,
    since: Annotated[str | None, typer.Option(help="Only rows created on or after this date.")] = None,
    unused_only: Annotated[bool, typer.Option(help="Only rows no model has trained on yet.")] = False,
) -> None:
    """Write approved ground truth as JSONL (text, label, language, source, confidence, created_at, id, split)."""
    from intelrouter.export import export_jsonl
    from intelrouter.store import parse_when

    langs = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    n = export_jsonl(_settings(), output, limit=limit, languages=langs, min_confidence=min_confidence,
                     since=parse_when(since, "--since"), unused_only=unused_only)
    echo(f"wrote {n} rows to {output}")


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Counts by table and review status, the last triage, the review backlog, unused approved samples."""
    import json

    from intelrouter.status import collect_status

    info = collect_status(_settings())
    if as_json:
        echo(json.dumps(info, indent=2))
        return
    echo(f"database            {info['database']}")
    echo(f"queries             {info['queries']}  " + _fmt(info["queries_by_review_status"]))
    echo(f"ml_data             {info['ml_data']}  " + _fmt(info["ml_data_by_source"]))
    echo(f"review_tasks        {info['review_tasks']}  " + _fmt(info["review_tasks_by_status"]))
    echo(f"last triage         {info['last_triage'] or 'never'}")
    echo(f"waiting for review  {info['waiting_for_review']}")
    echo(f"approved, unused    {info['approved_unused']}")


def _fmt(counts: dict) -> str:
    return "(" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + ")" if counts else ""


# --- end of foundation commands ---------------------------------------------------------------------


# --- training and registry -------------------------------------------------------------------------


def _features_option(text: str) -> dict[str, Any]:
    """The --features option's JSON object; anything else is an InputError naming the option."""
    import json

    from intelrouter.errors import InputError

    try:
        params = json.loads(text)
    except ValueError as exc:
        raise InputError(f"bad --features: not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise InputError("bad --features: give a JSON object, e.g. '{\"min_df\": 1}'")
    return params


@app.command("train")
def train_cmd(
    source: Annotated[str, typer.Option(help="`db` (ml_data) or a JSONL export (text, label, created_at, id, ...).")]
    = "db",
    test_size: Annotated[float | None, typer.Option(help="Held-out test share (default: settings).")] = None,
    random_state: Annotated[int | None, typer.Option(help="Seed of the split and the model (default: settings).")]
    = None,
    min_samples: Annotated[int | None, typer.Option(help="Fewest in-scope samples accepted (default: settings).")]
    = None,
    c: Annotated[float, typer.Option("--C", "-C", help="Inverse regularisation of the classifier.")] = 10.0,
    threshold_policy: Annotated[str | None, typer.Option(help="fixed, coverage or balanced (default: settings).")]
    = None,
    classifier: Annotated[str | None, typer.Option(help="lr, lr-lbfgs, sgd, svc, ens or mb (default: settings).")]
    = None,
    features: Annotated[str, typer.Option(help="TextFeatures parameters as JSON, e.g. "
                                          "'{\"static\": \"mean3-pca256-zipf\"}'.")] = "{}",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train on ml_data (or a JSONL export), evaluate, gate against @production and register a version."""
    from intelrouter.train import train

    result = train(_settings(), source=source, test_size=test_size, random_state=random_state,
                   min_samples=min_samples, C=c, threshold_policy=threshold_policy, classifier=classifier,
                   features=_features_option(features))
    if as_json:
        import json

        echo(json.dumps({"version": result.version, "semver": result.semver, "run_id": result.run_id,
                         "lifecycle": result.lifecycle, "threshold": result.threshold,
                         "gate": {"passed": result.gate.passed, "reasons": result.gate.reasons},
                         "report": str(result.report_path), "timings": result.timings,
                         "metrics": {k: v for k, v in result.metrics.items() if "_f1_" not in k}}))
        return
    m = result.metrics
    oos = f", OOS recall {m['test_oos_recall']:.4f}" if "test_oos_recall" in m else ""
    echo(f"trained v{result.semver} (model version {result.version}, run {result.run_id}): {result.lifecycle}")
    echo(f"test accuracy {m.get('test_accuracy', 0):.4f}, macro F1 {m.get('test_macro_f1', 0):.4f}{oos}; "
         f"threshold {result.threshold:.3f}")
    echo(f"gate {'passed' if result.gate.passed else 'failed'}:")
    for reason in result.gate.reasons:
        echo(f"  {reason}")
    echo(f"report {result.report_path}")


@app.command("evaluate")
def evaluate_cmd(
    model_uri: Annotated[str, typer.Option(help="Model to evaluate, e.g. models:/intelrouter/3 or runs:/ID/model.")],
    source: Annotated[str, typer.Option(help="`db` (ml_data) or a JSONL export.")] = "db",
) -> None:
    """Score a model against @production on the same labelled rows (their test split if they have one)."""
    from intelrouter.evaluate import compare_with_production

    out = compare_with_production(_settings(), model_uri, source)
    echo(f"{out['rows']} rows from {out['data']} (run {out['run_id']})")
    for group, values in out["metrics"].items():
        shown = ", ".join(f"{k} {values[k]:.4f}" for k in ("accuracy", "macro_f1", "coverage", "oos_recall")
                          if k in values)
        echo(f"  {group}: {shown}")
    if out["production_version"] is None:
        echo("no @production model: minimum-quality rules apply")
    echo(f"gate {'passed' if out['gate']['passed'] else 'failed'}:")
    for reason in out["gate"]["reasons"]:
        echo(f"  {reason}")


@app.command("models")
def models_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List registered versions: semver, lifecycle, aliases and key metrics."""
    from intelrouter.registry import describe_versions

    rows = describe_versions(_settings())
    if as_json:
        import json

        echo(json.dumps(rows))
        return
    if not rows:
        echo("no registered versions: run `intelrouter train`")
        return
    echo(f"{'version':>7}  {'semver':<9} {'lifecycle':<10} {'aliases':<19} {'accuracy':>8} {'macro_f1':>8} "
         f"{'recent':>8} {'threshold':>9}")
    for r in rows:
        aliases = ",".join("@" + a for a in r["aliases"]) or "-"
        echo(f"{r['version']:>7}  {r['semver']:<9} {r['lifecycle']:<10} {aliases:<19} {r['accuracy']:>8} "
             f"{r['macro_f1']:>8} {r['recent_accuracy']:>8} {r['threshold'][:6]:>9}")


@app.command("promote")
def promote_cmd(
    version: Annotated[str, typer.Argument(help="Registered version number (or its semver, e.g. 1.2.0).")],
    to: Annotated[str, typer.Option(help="staging (canary) or production.")],
) -> None:
    """Point @staging (canary) or @production at a version."""
    from intelrouter.registry import promote

    mv = promote(_settings(), version, to)  # type: ignore[arg-type]
    echo(f"@{to} -> version {mv.version} (v{mv.tags.get('semver', '?')})")


@app.command("rollback")
def rollback_cmd() -> None:
    """Put @production back on the previous production version in one step."""
    from intelrouter.registry import rollback

    mv = rollback(_settings())
    echo(f"@production -> version {mv.version} (v{mv.tags.get('semver', '?')})")


@app.command("benchmark")
def benchmark_cmd(
    dataset: Annotated[str, typer.Argument(help="clinc150, clinc150-small, clinc150-imbalanced, banking77, or a "
                                           "CSV/JSONL file with text, label, split.")],
    classifier: Annotated[str | None, typer.Option(help="Final step (default: settings).")] = None,
    c: Annotated[float, typer.Option("--C", "-C", help="Inverse regularisation of the classifier.")] = 10.0,
    features: Annotated[str, typer.Option(help="TextFeatures parameters as JSON, e.g. '{\"min_df\": 1}'.")] = "{}",
    datasets: Annotated[Path | None, typer.Option(help="Directory holding clinc150/ and banking77/.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train through the production path on a public benchmark and report its published metrics (no tuning on test)."""
    import json

    from intelrouter import benchmark
    from intelrouter.errors import InputError
    from intelrouter.features import TextFeatures
    from intelrouter.model import CLASSIFIERS
    from intelrouter.train import TrainOptions

    params = _features_option(features)
    try:
        options = TrainOptions(classifier=classifier, C=c, features=params)
        TextFeatures(**params)
        if (options.classifier or "lr") not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {options.classifier!r}: use one of {', '.join(CLASSIFIERS)}")
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad --features or --C: {str(exc).splitlines()[0]}") from None
    data = benchmark.load(dataset, datasets or benchmark.DATASETS_DIR)
    result = benchmark.run(data, _settings(), options)
    echo(json.dumps(result.as_dict(), indent=2) if as_json else benchmark.to_markdown(result))


# --- end of training and registry ------------------------------------------------------------------


# --- serving ---------------------------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes; each loads the models itself.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the router: POST /route (/api/query), /feedback, /override; GET /health, /metrics."""
    import uvicorn

    settings = _settings()  # a bad setting is one error line here, not a traceback in every worker
    if workers > 1:
        # every worker opens the registry as it starts: open it once here first, so that two workers never create a
        # new SQLite registry's tables at the same time ("duplicate column name"); unreachable is the workers' call
        from intelrouter import registry

        with contextlib.suppress(IntelRouterError):
            registry.alias_version(settings, "production")
    from serving.protocol import CoalescingHttpToolsProtocol

    # httptools with each answer's head and body in one write (serving/protocol.py)
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level=log_level, http=CoalescingHttpToolsProtocol)


# --- end of serving ---------------------------------------------------------------------------------


# --- human review ----------------------------------------------------------------------------------

review_app = typer.Typer(help="Human review in Label Studio: set up the project, push queries, pull answers.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")
_LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="At most this many tasks/answers.")]
_ProjectOpt = Annotated[
    int | None, typer.Option("--project-id", help="Label Studio project (default INTELROUTER_LABEL_STUDIO_PROJECT_ID).")
]


@review_app.command("setup")
def review_setup(
    title: Annotated[str, typer.Option(help="Project title, used when no project id is set.")] = "IntelRouter review",
) -> None:
    """Create the Label Studio review project (or update the configured one's labels) and print its id."""
    from intelrouter import review

    settings = _settings()
    project_id = review.setup_project(settings, title=title)
    echo(f"project {project_id} ready at {settings.label_studio_url.rstrip('/')}/projects/{project_id}")
    if settings.label_studio_project_id != project_id:
        echo(f"set INTELROUTER_LABEL_STUDIO_PROJECT_ID={project_id}")


@review_app.command("push")
def review_push(limit: _LimitOpt = None, project_id: _ProjectOpt = None) -> None:
    """Send needs-review queries to Label Studio as tasks (priority first, least confident first), once each."""
    from intelrouter import review

    r = review.push(_settings(), limit=limit, project_id=project_id)
    adopted = f"; adopted {r.adopted} left by an interrupted push" if r.adopted else ""
    echo(f"pushed {r.pushed} tasks to project {r.project_id}{adopted}")


@review_app.command("pull")
def review_pull(limit: _LimitOpt = None, project_id: _ProjectOpt = None) -> None:
    """Fetch answers given since the last pull: labels into ml_data, queries approved or rejected."""
    from intelrouter import review

    r = review.pull(_settings(), limit=limit, project_id=project_id)
    echo(f"pulled {r.written} answers from project {r.project_id}: {r.approved} approved, {r.rejected} none of "
         f"these, {r.skipped} skipped; {r.disagreements} disagree with the model; {r.unchanged} already pulled")


@review_app.command("sync")
def review_sync(limit: _LimitOpt = None, project_id: _ProjectOpt = None) -> None:
    """Pull the answers, then push what waits for review: both steps in one command."""
    from intelrouter import review

    r = review.sync(_settings(), limit=limit, project_id=project_id)
    echo(f"pulled {r.pull.written} answers ({r.pull.approved} approved, {r.pull.rejected + r.pull.skipped} "
         f"rejected); pushed {r.push.pushed} tasks to project {r.push.project_id}")


# --- end of human review ---------------------------------------------------------------------------


# --- flows, monitoring, demo -----------------------------------------------------------------------

flow_app = typer.Typer(help="Prefect flows: run one now (ephemeral Prefect unless PREFECT_API_URL is set).",
                       no_args_is_help=True)
canary_app = typer.Typer(help="The @staging canary: compare it with @production and act.", no_args_is_help=True)
app.add_typer(flow_app, name="flow")
app.add_typer(canary_app, name="canary")
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
    import json

    from flows.common import prefect_env
    from intelrouter.errors import InputError

    if name not in FLOWS:
        raise InputError(f"unknown flow {name!r}: use one of {', '.join(FLOWS)}")
    _settings()  # a bad setting is one error line before Prefect starts
    prefect_env()
    from flows.deploy import load_flow

    result = load_flow(FLOWS[name])(**({"force": force} if name == "train" else {}))
    echo(json.dumps(result, indent=2, default=str))


@canary_app.command("check")
def canary_check(
    dry_run: Annotated[bool, typer.Option(help="Decide and log, change nothing.")] = False,
) -> None:
    """Compare @staging with @production on feedback: promote, raise the share a step, roll back, or wait."""
    from intelrouter.canary import check

    report = check(_settings(), dry_run=dry_run)
    decision = report.decision
    echo(f"{decision['action']}{'' if report.applied or decision['action'] in ('wait', 'none') else ' (dry run)'}: "
         f"{decision['reason']}")
    if report.path:
        echo(f"log: {report.path}")


@app.command("report")
def report(
    days: Annotated[int | None, typer.Option(help="Days to look back (default: INTELROUTER_REPORT_DAYS).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Monitoring: per day and per model version, alerts (logged, and POSTed to the webhook when set)."""
    import json

    from intelrouter.report import run_report, to_markdown

    rep = run_report(_settings(), days=days)
    echo(json.dumps(rep.as_dict(), indent=2, default=str) if as_json else to_markdown(rep) + f"\nreport: {rep.path}")


@app.command("deploy")
def deploy(
    api_url: Annotated[str | None, typer.Option(help="Prefect server API, e.g. http://127.0.0.1:4200/api "
                                                     "(default: PREFECT_API_URL).")] = None,
) -> None:
    """Serve every flow on its schedule against a Prefect server (blocks; schedules survive a restart)."""
    from flows.common import prefect_env

    settings = _settings()
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
    from intelrouter.config import load_settings
    from intelrouter.demo import run_demo

    run_demo(load_settings(data_dir=data_dir) if data_dir else _settings())


# --- end of flows, monitoring, demo ----------------------------------------------------------------


def main() -> None:
    """Entry point: run the app, turning known errors into one line on stderr and exit code 1."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        app(standalone_mode=False)
    except IntelRouterError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last line of defence: one line, no traceback
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # a usage error (typer vendors its own click)
            exc.show()
            sys.exit(exc.exit_code)
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
