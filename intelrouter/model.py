"""The router model: a fitted feature + classifier pipeline, its threshold, its predictions, its pyfunc form."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from intelrouter.classifiers import make_classifier
from intelrouter.errors import IntelRouterError, NotFoundError, RegistryError
from intelrouter.features import TextFeatures
from intelrouter.lean import LeanRows
from intelrouter.names import UNCERTAIN
from intelrouter.text import as_texts

ROUTER_FILE = "router.pkl"
# Classes that moved between modules since models were first pickled: (old module, name) -> new module.
MOVED = {
    ("intelrouter.model", name): "intelrouter.classifiers"
    for name in ("BudgetedLogisticRegression", "TemperatureScaled", "MiniBatchSoftmax", "SoftmaxOverScores")
} | {("intelrouter.ensemble", "AveragedLinear"): "intelrouter.classifiers"}


@dataclass
class Prediction:
    """One answer: `label` is UNCERTAIN when the confidence is below the threshold; `top_label` is the argmax."""

    label: str
    confidence: float
    top_label: str
    uncertain: bool

    def as_dict(self) -> dict[str, Any]:
        """The prediction as a plain dict."""
        return asdict(self)


def make_pipeline(features: TextFeatures | None = None, classifier: Any = None) -> Pipeline:
    """The model pipeline: text features, then the classifier."""
    return Pipeline([("features", features or TextFeatures()), ("classifier", classifier or make_classifier())])


class Router:
    """A fitted router: probabilities, predictions with UNCERTAIN, and a lean one-text path."""

    def __init__(self, pipeline: Pipeline, threshold: float, info: dict[str, Any] | None = None,
                 margin: float = 0.0) -> None:
        self.pipeline = pipeline
        self.threshold = float(threshold)
        # Rasa's ambiguity rule: UNCERTAIN when the top two confidences are closer than this (0 turns it off)
        self.margin = float(margin)
        self.info: dict[str, Any] = dict(info or {})
        self._lean: tuple[np.ndarray, np.ndarray, LeanRows] | None = None

    @property
    def labels(self) -> list[str]:
        """The classes, in probability-column order."""
        labels = self.__dict__.get("_labels")
        if labels is None:
            labels = self.__dict__["_labels"] = [str(c) for c in self.pipeline.classes_]
        return labels

    def refresh(self) -> None:
        """Forget cached coefficients and labels (after the pipeline's classifier changed, e.g. recalibrated)."""
        self._lean = None
        self.__dict__.pop("_labels", None)

    @property
    def features(self) -> TextFeatures:
        """The fitted feature step."""
        return self.pipeline.steps[0][1]

    @property
    def feature_set(self) -> str:
        """Id of the feature set (its change bumps the major version)."""
        return self.features.feature_set_id()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, one row per text: row i is exactly `proba_one(texts[i])`.

        Both paths run the same per-text arithmetic, so the batch answers (used to choose the threshold and
        to evaluate) and the serving answers are the same floats: a confidence at the threshold cannot flip.
        """
        texts = as_texts(texts)
        out = np.empty((len(texts), len(self.labels)), dtype=np.float64)
        for i, text in enumerate(texts):
            out[i] = self._proba(text)
        return out

    def _answer(self, proba_row: np.ndarray) -> Prediction:
        k = int(proba_row.argmax())
        confidence = float(proba_row[k])
        top = self.labels[k]
        uncertain = confidence < self.threshold
        if not uncertain and self.__dict__.get("margin", 0.0) > 0.0 and len(proba_row) > 1:
            uncertain = confidence - float(np.partition(proba_row, -2)[-2]) < self.margin
        return Prediction(UNCERTAIN if uncertain else top, confidence, top, uncertain)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Predictions for many texts."""
        if len(texts) == 0:
            return []
        return [self._answer(row) for row in self.predict_proba(texts)]

    def _lean_parts(self) -> tuple[np.ndarray, np.ndarray, LeanRows]:
        if self._lean is None:
            clf = self.pipeline.steps[-1][1]
            # transposed, divided by the temperature once, float32 (half the memory a text's row gather touches):
            # per text, a row gather, one np.dot and the softmax are all that is left (BENCHMARKS.md)
            temperature = float(getattr(clf, "temperature_", 1.0))
            coef_t = np.ascontiguousarray((np.asarray(clf.coef_, dtype=np.float64).T / temperature).astype(np.float32))
            intercept = np.asarray(clf.intercept_, dtype=np.float64).ravel() / temperature
            self._lean = (coef_t, intercept, LeanRows(self.features))
        return self._lean

    def _proba(self, text: str) -> np.ndarray:
        coef_t, intercept, rows = self._lean_parts()
        idx, vals, static = rows.row_parts(text)
        scores = np.dot(vals, coef_t.take(idx, axis=0)) + intercept if len(idx) else intercept.copy()
        if static is not None:  # the static block's rows are the last ones: a view, no gather
            scores += np.dot(static, coef_t[len(coef_t) - len(static):])
        if len(scores) == 1:
            scores = np.array([0.0, scores[0]])
        scores -= scores.max()  # softmax of one row, in place
        np.exp(scores, out=scores)
        scores /= scores.sum()
        return scores

    def proba_one(self, text: str) -> np.ndarray:
        """Class probabilities of one text without sklearn's per-call overhead (≈ the sklearn pipeline's)."""
        return self._proba(as_texts([text])[0])

    def predict_one(self, text: str) -> Prediction:
        """The prediction for one text (the serving path): identical to `predict([text])[0]`."""
        return self._answer(self._proba(text if isinstance(text, str) else as_texts([text])[0]))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_lean"] = None
        state.pop("_labels", None)
        return state

    def save(self, path: str | Path) -> Path:
        """Write the router to one file."""
        path = Path(path)
        with path.open("wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    @staticmethod
    def load(path: str | Path) -> Router:
        """Read a router written by `save`; an unreadable file is a RegistryError naming it."""
        try:
            with Path(path).open("rb") as fh:
                router = _Unpickler(fh).load()
        except IntelRouterError:
            raise
        except FileNotFoundError:
            raise NotFoundError(f"model file {path} does not exist") from None
        except Exception as exc:  # truncated or foreign pickles raise many kinds of errors
            raise RegistryError(f"model file {path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from None
        if not isinstance(router, Router):
            raise RegistryError(f"model file {path} does not hold an IntelRouter model")
        return router


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a hard dependency; this keeps import errors readable
    PythonModel = object  # type: ignore[assignment,misc]


class RouterModel(PythonModel):
    """The MLflow pyfunc form: DataFrame with `text` in; label, confidence, top_label, uncertain out."""

    def load_context(self, context: Any) -> None:
        """Load the router artifact."""
        self.router = Router.load(context.artifacts["router"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Predict for every row of `model_input` (a DataFrame with a `text` column, or a list of texts)."""
        preds = self.router.predict(as_texts(model_input))
        return pd.DataFrame(
            {
                "label": [p.label for p in preds],
                "confidence": np.array([p.confidence for p in preds], dtype=np.float64),
                "top_label": [p.top_label for p in preds],
                "uncertain": np.array([p.uncertain for p in preds], dtype=bool),
            }
        )


class _Unpickler(pickle.Unpickler):
    """Reads routers pickled before a class moved module (see MOVED): older versions keep loading."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED.get((module, name), module), name)
