"""Commands over the store: the schema, captured queries, ground-truth imports, exports, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import JsonOpt, app, capture_app, data_app, db_app, echo, echo_json, get_settings


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the schema migrations to the configured database."""
    from intelrouter import store

    settings = get_settings()
    echo(f"database at revision {store.upgrade(settings, revision)}")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the configured database."""
    from intelrouter import store

    echo(store.current_revision(get_settings()) or "empty (run `intelrouter db upgrade`)")


@capture_app.command("import")
def capture_import(
    file: Annotated[Path, typer.Argument(help="JSONL of past conversations, or a serving journal (moved aside once "
                                              "replayed).")],
) -> None:
    """Import past conversations (text, user_id, language, predicted_label, confidence, provider, ...)."""
    from intelrouter.capture import import_conversations

    r = import_conversations(get_settings(), file)
    echo(f"imported {r.new} new queries ({r.read - r.new} already present) from {file}")
    for lineno, size in r.torn:
        echo(f"skipped a torn last line: {file}:{lineno} ({size} bytes cut short, e.g. by a crash mid-write)")
    if r.rotated:
        echo(f"replayed journal moved to {r.rotated}")


@capture_app.command("triage")
def capture_triage(
    since: Annotated[str | None, typer.Option(help="Start of the window (YYYY-MM-DD or ISO time), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="End of the window, exclusive.")] = None,
) -> None:
    """Auto-approve trusted confident queries, queue the rest for review, write the daily report."""
    from intelrouter.store import parse_when
    from intelrouter.triage import triage

    report = triage(get_settings(), parse_when(since, "--since"), parse_when(until, "--until"))
    echo(
        f"triaged {report.triaged} of {report.captured} captured: {report.auto_approved} auto-approved, "
        f"{report.needs_review} need review, {report.resolved_known} settled from known answers; "
        f"{report.approved_waiting_for_training} approved waiting for training"
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

    read, new = import_labels(get_settings(), file, text_col, label_col, split_col)
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
    n = export_jsonl(get_settings(), output, limit=limit, languages=langs, min_confidence=min_confidence,
                     since=parse_when(since, "--since"), unused_only=unused_only)
    echo(f"wrote {n} rows to {output}")


@app.command("status")
def status(as_json: JsonOpt = False) -> None:
    """Counts by table and review status, the last triage, the review backlog, unused approved samples."""
    from intelrouter.status import collect_status

    info = collect_status(get_settings())
    if as_json:
        echo_json(info)
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

