"""`intelrouter simulate`: weeks of real-data traffic through the real loop in minutes, policy beside policy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.app import app, echo, get_settings

POLICY_CHOICES = ("default", "seed", "random", "skyline", "all")


@app.command("simulate")
def simulate_cmd(
    dataset: Annotated[str, typer.Option(help="clinc150, banking77, or a CSV/JSONL file with text, label, split "
                                              "(its test rows are the held-out set).")] = "clinc150",
    days: Annotated[int, typer.Option(min=1, max=365, help="Simulated days.")] = 28,
    queries_per_day: Annotated[int, typer.Option(min=1, help="Queries a day (Zipf-like repeats of the traffic "
                                                            "pool).")] = 500,
    review_budget: Annotated[int, typer.Option(min=0, help="Human labels a day (the seed policy has no budget).")]
    = 100,
    reviewer_error: Annotated[float, typer.Option(min=0, max=1, help="Share of reviewers' answers that are wrong.")]
    = 0.0,
    feedback_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of routed users who give feedback.")]
    = 0.05,
    policy: Annotated[str, typer.Option(help="default (the product as configured), seed (review every query that "
                                             "needs it), random (the same budget on random tasks), skyline (every "
                                             "query labelled), or all of them on the same data.")] = "all",
    seed_per_label: Annotated[int, typer.Option(min=1, help="Labelled rows per label to start from.")] = 10,
    zipf: Annotated[float, typer.Option(min=0, help="Skew of the traffic's popularity (0: uniform).")] = 0.8,
    random_state: Annotated[int, typer.Option(help="Seed of the data cut, the traffic and the people.")] = 0,
    jobs: Annotated[int, typer.Option(min=1, max=4, help="Policies run at once (one process each).")] = 2,
    bad_candidate_week: Annotated[int | None, typer.Option(min=1, help="That week's training learns from labels "
                                                           "shuffled on 40 % of its rows, and its canary is started "
                                                           "by hand: what do the gate, the shadow replay and the "
                                                           "canary's early stop make of it?")] = None,
    output: Annotated[Path | None, typer.Option(help="Where the run's stores, result.json, simulation.png and "
                                                     "simulation.html go (default DATA_DIR/simulations/...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (progress goes to stderr).")]
    = False,
) -> None:
    """The loop in time-lapse on a public dataset: held-out accuracy, fallback, labels and decisions per week."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from intelrouter.errors import InputError
    from simulation.data import NAMED
    from simulation.loop import POLICIES, Options
    from simulation.run import simulate, write_outputs

    if policy not in POLICY_CHOICES:
        raise InputError(f"unknown policy {policy!r}: use one of {', '.join(POLICY_CHOICES)}")
    if dataset not in NAMED and not Path(dataset).is_file():
        raise InputError(f"{dataset}: no such dataset: use clinc150, banking77 or a CSV/JSONL file with text, label, "
                         "split")
    settings = get_settings()
    policies = list(POLICIES) if policy == "all" else [policy]
    options = Options(dataset=dataset, days=days, queries_per_day=queries_per_day, review_budget=review_budget,
                      reviewer_error=reviewer_error, feedback_rate=feedback_rate, seed_per_label=seed_per_label,
                      zipf=zipf, random_state=random_state, bad_candidate_week=bad_candidate_week)
    workdir = output or settings.data_dir / "simulations" / f"{Path(dataset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    console = Console(stderr=as_json)
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        bars = {p: progress.add_task(p, total=days * queries_per_day) for p in policies}
        result = simulate(options, settings, policies, workdir, lambda p, n: progress.advance(bars[p], n), jobs=jobs)
    paths = write_outputs(result, workdir, settings)
    if as_json:
        echo(json.dumps(result, default=str))
        return
    for name, run in result["policies"].items():
        s = run["summary"]
        echo(f"{name:<8} held-out {s['final_heldout_accuracy']:.1%}, fallback {s['final_fallback_rate']:.1%}, "
             f"{s['human_labels']} human labels, {s['wrong_gate_rejections']} wrong gate rejections, "
             f"{s['wrong_promotions']} wrong promotions")
        if run.get("bad_candidate"):
            echo(f"{'':<8} the worse candidate: {json.dumps(run['bad_candidate'], default=str)}")
    echo(f"goals: {json.dumps(result['goals'])}")
    echo(f"in {result['wall_seconds']:.0f} s; files: {', '.join(str(p) for p in paths.values())}")
