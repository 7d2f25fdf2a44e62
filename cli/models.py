"""Commands over models: train, evaluate, list, promote, roll back, and benchmark on public datasets."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.app import JsonOpt, app, echo, features_option, get_settings


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
    from intelrouter.jobs import train

    # MLflow prints "View run ..." links on stdout when it talks to a tracking server: with --json, stdout is the
    # JSON document alone, so anything printed while training goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        result = train(get_settings(), source=source, test_size=test_size, random_state=random_state,
                       min_samples=min_samples, C=c, threshold_policy=threshold_policy, classifier=classifier,
                       features=features_option(features))
    if as_json:
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
    from intelrouter.jobs import evaluate

    out = evaluate(get_settings(), model_uri, source)
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
def models_cmd(as_json: JsonOpt = False) -> None:
    """List registered versions: semver, lifecycle, aliases and key metrics."""
    from intelrouter.registry import describe_versions

    rows = describe_versions(get_settings())
    if as_json:
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
    from intelrouter.lifecycle import promote

    mv = promote(get_settings(), version, to)  # type: ignore[arg-type]
    echo(f"@{to} -> version {mv.version} (v{mv.tags.get('semver', '?')})")


@app.command("rollback")
def rollback_cmd() -> None:
    """Put @production back on the previous production version in one step."""
    from intelrouter.lifecycle import rollback

    mv = rollback(get_settings())
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
    from intelrouter import benchmark
    from intelrouter.errors import InputError
    from intelrouter.jobs import train_options
    from intelrouter.train import feature_params

    settings = get_settings()
    options = train_options(classifier=classifier, C=c, features=features_option(features))
    try:
        feature_params(settings, options)  # checked before the dataset loads
    except InputError as exc:
        raise InputError(f"bad --features: {exc}") from None
    data = benchmark.load(dataset, datasets or benchmark.DATASETS_DIR)
    result = benchmark.run(data, settings, options)
    echo(json.dumps(result.as_dict(), indent=2) if as_json else benchmark.to_markdown(result))

