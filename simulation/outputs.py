"""The simulation's pictures and records: a PNG of the run, a dashboard page, an MLflow run per policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from intelrouter import tracking
from intelrouter.config import Settings

PLOTTED = (("heldout_accuracy", "held-out accuracy of @production"), ("fallback_rate", "fallback (UNCERTAIN) rate"),
           ("human_labels", "human labels spent (cumulative)"), ("auto_approval_rate", "auto-approval rate"))
EXPERIMENT = "intelrouter-simulation"


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [day | {"policy": name} for name, run in result["policies"].items() for day in run["days"]]


def write_plot(result: dict[str, Any], path: Path) -> Path:
    """Accuracy, fallback, labels and auto-approval over the days, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (key, title) in zip(axes.ravel(), PLOTTED, strict=True):
        for name, run in result["policies"].items():
            days = [d for d in run["days"] if d.get(key) is not None]
            ax.plot([d["day"] for d in days], [d[key] for d in days], label=name, marker=".")
        ax.set_title(title)
        ax.set_xlabel("day")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"intelrouter simulate: {result['dataset']}, {result['options']['days']} days × "
                 f"{result['options']['queries_per_day']} queries")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_page(result: dict[str, Any], path: Path) -> Path:
    """The run as a dashboard page (one offline HTML file, the same charts the loop's dashboard draws)."""
    from intelrouter.dashboard import rows_to_charts, write_series_html

    metrics = {key: title for key, title in PLOTTED} | {"wrong_label_rate": "wrong-label rate of the ground truth",
                                                        "true_online_accuracy": "answers right (all traffic)"}
    percent = ["heldout_accuracy", "fallback_rate", "auto_approval_rate", "wrong_label_rate", "true_online_accuracy"]
    goals = result.get("goals", {})
    spec = {"title": f"Simulation: {result['dataset']}", "subtitle": f"{result['options']['days']} days, "
            f"{result['options']['queries_per_day']} queries a day, policies {', '.join(result['policies'])}",
            "notes": [f"{k}: {v}" for k, v in goals.items()],
            "charts": rows_to_charts(_rows(result), metrics, percent=percent)}
    return write_series_html(spec, path)


def log_to_mlflow(result: dict[str, Any], paths: dict[str, Path], settings: Settings) -> list[str]:
    """An MLflow run per policy (parameters; the daily figures as steps) so simulations compare in the MLflow UI."""
    import mlflow

    sim_settings = settings.model_copy(update={"mlflow_experiment": EXPERIMENT})
    options = result["options"]
    run_ids = []
    for name, run in result["policies"].items():
        tags = {"kind": "simulation", "policy": name, "dataset": result["dataset"]}
        with tracking.tracked_run(sim_settings, f"sim-{result['dataset']}-{name}", tags) as active:
            mlflow.log_params({"policy": name, "dataset": result["dataset"],
                               **{k: v for k, v in options.items() if k != "dataset"},
                               **{f"part_{k}": v for k, v in result["parts"].items()}})
            for day in run["days"]:
                mlflow.log_metrics({k: float(v) for k, v in day.items()
                                    if isinstance(v, int | float) and not isinstance(v, bool) and k != "day"},
                                   step=int(day["day"]))
            mlflow.log_dict(run["summary"], "summary.json")
            for path in paths.values():
                mlflow.log_artifact(str(path))
            run_ids.append(active.info.run_id)
    return run_ids
