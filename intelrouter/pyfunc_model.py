"""MLflow models-from-code entry: the pyfunc object MLflow loads for an IntelRouter version (not imported by us).

Logged beside the model's own copy of the package modules it needs (`code/intelrouter/`, see model_package), so
it runs in an environment made from the model's requirements alone.
"""

import mlflow

from intelrouter.model import RouterModel

mlflow.models.set_model(RouterModel())
