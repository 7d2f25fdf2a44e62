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

from intelrouter import __version__
from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError, RegistryError
from intelrouter.registry import call, failure_message, get_client, quiet_mlflow

if TYPE_CHECKING:
    from mlflow.entities import Run

    from intelrouter.model import Router

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


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


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    pins = [f"{p}=={version(p)}" for p in ("mlflow", "scikit-learn", "numpy", "scipy", "pandas", "nltk")]
    return [f"intelrouter=={__version__}", *pins]


def model_signature() -> Any:
    """The pyfunc's signature: a `text` column in; label, confidence, top_label, uncertain out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "confidence"),
                        ColSpec("string", "top_label"), ColSpec("boolean", "uncertain")]),
    )


def log_router(router: Router, example_texts: list[str], workdir: Path) -> Any:
    """Log the router as the run's pyfunc model (models-from-code, the pickled Router as its artifact)."""
    import mlflow

    from intelrouter.model import ROUTER_FILE

    router_path = router.save(workdir / ROUTER_FILE)
    example = pd.DataFrame({"text": example_texts[:3] or ["hello"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # type-hint advice; our signature is explicit
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts={"router": str(router_path)},
            signature=model_signature(), input_example=example, pip_requirements=_pip_requirements(),
        )
