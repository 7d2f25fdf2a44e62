"""Loading a registered version's Router: by alias, by version number, or from any MLflow model URI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from intelrouter import registry
from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError, NotFoundError, RegistryError, first_line
from intelrouter.model import ROUTER_FILE, Router

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion


def load_version(settings: Settings, version: str | int) -> Router:
    """Load the Router of one registered version."""
    return load_router(registry.model_uri(settings, str(registry.get_version(settings, version).version)),
                       settings.tracking_uri)


def load_alias(settings: Settings, alias: str) -> tuple[ModelVersion, Router] | None:
    """The version behind an alias and its loaded Router, or None when the alias is not set."""
    mv = registry.alias_version(settings, alias)
    if mv is None:
        return None
    return mv, load_router(registry.model_uri(settings, str(mv.version)), settings.tracking_uri)


def load_router(model_uri: str, tracking_uri: str | None = None) -> Router:
    """Load a Router from an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., a path)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        source = _resolve_model_uri(model_uri, tracking_uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri)
    except IntelRouterError:
        raise
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise NotFoundError(f"model {model_uri} not found: {first_line(exc)}") from None
        raise RegistryError(f"cannot fetch model {model_uri}: {first_line(exc)}") from None
    except Exception as exc:  # network and file errors of the artifact store
        raise RegistryError(f"cannot fetch model {model_uri}: {first_line(exc)}") from None
    path = Path(local) / "artifacts" / ROUTER_FILE
    if not path.is_file():
        raise RegistryError(f"model {model_uri} has no {ROUTER_FILE} artifact: it is not an IntelRouter model")
    return Router.load(path)


def _resolve_model_uri(model_uri: str, tracking_uri: str | None) -> str:
    # MLflow resolves models:/ URIs against the process-global registry URI only; resolve them here so
    # concurrent callers with different tracking URIs (tests, a serving poller) never share global state
    if not model_uri.startswith("models:/"):
        return model_uri
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    ref = model_uri[len("models:/"):].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
    else:
        return client.get_logged_model(ref).artifact_location
    return client.get_model_version_download_uri(name, str(version))
