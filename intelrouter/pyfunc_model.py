"""MLflow models-from-code entry: the pyfunc object MLflow loads for an IntelRouter version (not imported by us)."""

import mlflow

from intelrouter.model import RouterModel

mlflow.models.set_model(RouterModel())
