"""MLflow runs for every job: the experiment, the tracked run, and what a run logs (params, dataset, model).

`tracked_run` is the one way a job starts an MLflow run: inside `mlflow run` it logs into the run MLflow made,
elsewhere it starts one in the configured experiment; any MLflow failure leaves it as one RegistryError line.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from intelrouter import __version__, model_package
from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError, RegistryError
from intelrouter.model_package import PYFUNC_CODE
from intelrouter.registry import call, failure_message, get_client, quiet_mlflow

if TYPE_CHECKING:
    from mlflow.entities import Run

    from intelrouter.data import Splits
    from intelrouter.gate import GateResult
    from intelrouter.model import Router

NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
SKLEARN_MODEL = "sklearn-pipeline"  # the run's sklearn model: runs:/<run_id>/sklearn-pipeline


def ensure_experiment(settings: Settings) -> str:
    """The experiment's id, creating it with an explicit artifact location when it does not exist."""
    client = get_client(settings)
    exp = call(settings, "experiment", client.get_experiment_by_name, settings.mlflow_experiment)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            call(settings, "experiment", client.restore_experiment, exp.experiment_id)
        return exp.experiment_id
    if settings.tracking_uri.split(":", 1)[0] in ("http", "https", "databricks"):
        # a tracking server stores (or proxies) artifacts itself: a client-side path would bypass it
        return call(settings, "experiment", client.create_experiment, settings.mlflow_experiment)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return call(settings, "experiment", client.create_experiment, settings.mlflow_experiment,
                artifact_location=settings.artifacts_dir.as_uri())


def code_version() -> str:
    """The git commit of the code when it is a checkout with commits, else the package version."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


@contextmanager
def tracked_run(settings: Settings, run_name: str, tags: dict[str, str]) -> Iterator[Run]:
    """An MLflow run for a job: the one `mlflow run` launched (MLFLOW_RUN_ID), else a new one in the experiment."""
    quiet_mlflow()
    import mlflow

    experiment_id = ensure_experiment(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    launched = os.environ.get("MLFLOW_RUN_ID")
    try:
        with mlflow.start_run(run_id=launched, experiment_id=None if launched else experiment_id,
                              run_name=None if launched else run_name,
                              tags=None if launched else {**tags, "mlflow.runName": run_name}) as run:
            if launched:
                mlflow.set_tags(tags)
            yield run
    except IntelRouterError:
        raise
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException | ConnectionError | OSError):
            raise RegistryError(failure_message(settings, exc)) from None
        raise


def log_new_params(run: Run, params: dict[str, Any]) -> None:
    """Log parameters but those the run holds already (`mlflow run` logged its -P values; MLflow refuses a change)."""
    import mlflow

    logged = mlflow.get_run(run.info.run_id).data.params if os.environ.get("MLFLOW_RUN_ID") else {}
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})


def label_counts(frame: pd.DataFrame, limit: int = 1000) -> dict[str, int]:
    """The most frequent labels and their row counts."""
    return {str(k): int(v) for k, v in frame["label"].value_counts().head(limit).items()}


def log_dataset(frame: pd.DataFrame, where: str, digest: str, sizes: dict[str, int]) -> None:
    """The training data as an MLflow dataset input: digest, source, label distribution, rows per split."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource

    view = frame[["id", "text", "label", "split", "created_at"]].astype({"split": "object", "id": "object"})
    view = view.assign(created_at=view["created_at"].astype("string"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # schema hints about integer ids
        # the dataset source is stored in a 64 KB column: the most frequent labels are plenty
        dataset = mlflow.data.from_pandas(
            view, source=CodeDatasetSource({"source": where, "label_distribution": label_counts(frame)}),
            targets="label", name="ml_data", digest=digest[:32],
        )
        mlflow.log_input(dataset, context="training", tags={
            "rows": str(len(frame)), **{f"{k}_rows": str(v) for k, v in sizes.items()},
            "labels": str(frame["label"].nunique()),
        })


def model_signature() -> Any:
    """The pyfunc's signature: a `text` column in; label, confidence, top_label, uncertain out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "confidence"),
                        ColSpec("string", "top_label"), ColSpec("boolean", "uncertain")]),
    )


def sklearn_signature() -> Any:
    """The sklearn model's signature: a `text` column in, the top label out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema([ColSpec("string")]))


def log_router(router: Router, example_texts: list[str], workdir: Path) -> Any:
    """Log the router as the run's pyfunc model, and its fitted pipeline as an sklearn model, self-contained.

    The pyfunc (models-from-code, the pickled Router as its artifact) is what the registry serves; the sklearn
    model (`runs:/<run_id>/sklearn-pipeline`) is the same fitted pipeline for sklearn tooling. Both carry the
    package's model modules (`code_paths`) and third-party pins only, so they load where intelrouter is not
    installed (`mlflow models serve --env-manager uv`). Returns the pyfunc's ModelInfo.
    """
    import logging

    import mlflow

    from intelrouter.model import ROUTER_FILE

    static = bool(getattr(router.features, "static", None))
    code = [str(model_package.write_model_code(workdir / "code", static))]
    requirements = model_package.model_requirements(static)
    router_path = router.save(workdir / ROUTER_FILE)
    example = pd.DataFrame({"text": example_texts[:3] or ["hello"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # type-hint advice; our signature is explicit
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts={"router": str(router_path)},
            code_paths=code, signature=model_signature(), input_example=example, pip_requirements=requirements,
        )
        sklearn_logger = logging.getLogger("mlflow.sklearn")
        level = sklearn_logger.level
        sklearn_logger.setLevel(logging.ERROR)  # its advice to prefer skops: pickle is chosen on purpose (README)
        try:
            # pickle, not skops (MLflow's default): skops needs a trust list of our types, stores the vocabularies
            # as JSON (2.2x the size on CLINC150) and MLflow 3.17 gates skops loading behind the same
            # MLFLOW_ALLOW_PICKLE_DESERIALIZATION flag as pickle, since the trust list comes from the model itself
            mlflow.sklearn.log_model(
                router.pipeline, name=SKLEARN_MODEL, serialization_format="pickle", code_paths=code,
                signature=sklearn_signature(), pip_requirements=requirements,
            )
        finally:
            sklearn_logger.setLevel(level)
    return info


NOTE_COLUMNS = (("rows", "rows"), ("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("coverage", "coverage"),
                ("answered_accuracy", "answered accuracy"), ("ece", "ECE"), ("oos_recall", "OOS recall"))


def run_note(router: Router, splits: Splits, digest: str, metrics: dict[str, float], decision: GateResult) -> str:
    """The markdown description of a training run and its registered version: data, metrics, gate, threshold."""
    from intelrouter.evaluate import SLICES

    info = router.info
    sizes = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    lines = [
        f"**IntelRouter {info.get('semver', '')}**: gate **{'passed' if decision.passed else 'failed'}**, "
        f"threshold {router.threshold:.4f} (policy `{info.get('threshold_policy_used', '?')}`, asked "
        f"`{info.get('threshold_policy', '?')}`), classifier `{info.get('classifier', '?')}`, "
        f"temperature {float(info.get('temperature', 1.0)):.3f}.",
        "",
        f"**Data**: {sum(sizes.values())} rows ({', '.join(f'{k} {v}' for k, v in sizes.items())}; "
        f"{splits.how}), digest `{digest[:16]}`, features `{info.get('feature_set', '?')}`.",
        "",
    ]
    columns = [(key, title) for key, title in NOTE_COLUMNS if any(f"{s}_{key}" in metrics for s in SLICES)]
    baseline = any(f"production_{s}_accuracy" in metrics for s in SLICES)
    extra = ["@production accuracy", "@production macro F1"] if baseline else []
    lines += ["| slice | " + " | ".join([t for _, t in columns] + extra) + " |",
              "|---" * (1 + len(columns) + len(extra)) + "|"]
    for s in SLICES:
        cells = [_cell(metrics.get(f"{s}_{key}"), key) for key, _ in columns]
        if baseline:
            cells += [_cell(metrics.get(f"production_{s}_{key}"), key) for key in ("accuracy", "macro_f1")]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "**Gate**: " + ("passed" if decision.passed else "failed") + (
        " (candidate and @production on the same test rows)" if baseline else " (first model: minimum quality)"),
        *[f"- {reason}" for reason in decision.reasons]]
    return "\n".join(lines)


def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "–"
    return str(int(value)) if key == "rows" else f"{value:.4f}"
