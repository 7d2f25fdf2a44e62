"""The router model: a fitted feature + linear-classifier pipeline, its threshold, and its MLflow pyfunc form."""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from intelrouter.errors import IntelRouterError, NotFoundError, RegistryError
from intelrouter.features import TextFeatures, as_texts

UNCERTAIN = "UNCERTAIN"
ROUTER_FILE = "router.pkl"
CLASSIFIERS = ("lr", "lr-lbfgs", "sgd", "svc", "ens", "mb")


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


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a 2-D score array."""
    z = scores - scores.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _two_class(scores: np.ndarray) -> np.ndarray:
    # sklearn gives one score column for two classes; [0, s] under softmax is exactly expit(s)
    return np.column_stack([np.zeros_like(scores), scores]) if scores.ndim == 1 else scores


def fit_temperature(scores: np.ndarray, classes: np.ndarray, y: Any, current: float = 1.0) -> float:
    """The temperature T minimising the log-loss of softmax(scores / T) on held-out rows (unknown labels ignored)."""
    from scipy.optimize import minimize_scalar

    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, v in enumerate(y) if v in index]
    if not keep:
        return current
    scores = _two_class(np.asarray(scores, dtype=np.float64))[keep]
    target = np.array([index[y[i]] for i in keep])

    def nll(log_t: float) -> float:
        z = scores / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(target)), target]))

    return float(math.exp(minimize_scalar(nll, bounds=(-6, 4), method="bounded").x))


class SoftmaxOverScores:
    """Probabilities as softmax(decision_function / temperature_), predictions as their argmax."""

    classes_: np.ndarray
    temperature_: float
    decision_function: Any  # defined by each classifier

    def predict_proba(self, x: Any) -> np.ndarray:
        """Calibrated class probabilities."""
        return softmax(_two_class(self.decision_function(x)).astype(np.float64) / self.temperature_)

    def predict(self, x: Any) -> np.ndarray:
        """The argmax class."""
        return self.classes_[self.predict_proba(x).argmax(axis=1)]

    def calibrate(self, x: Any, y: Any) -> float:
        """Choose the temperature minimising the log-loss on held-out data (unknown labels ignored)."""
        self.temperature_ = fit_temperature(self.decision_function(x), self.classes_, y, self.temperature_)
        return self.temperature_


class TemperatureScaled(SoftmaxOverScores, ClassifierMixin, BaseEstimator):
    """A linear margin classifier whose probabilities are softmax(scores / T), T fitted on held-out data."""

    def __init__(self, estimator: Any = None, temperature: float | None = None) -> None:
        self.estimator = estimator
        self.temperature = temperature

    def fit(self, x: Any, y: Any) -> TemperatureScaled:
        """Fit the margin classifier; the temperature stays as given (1 until `calibrate`)."""
        self.estimator_ = clone(self.estimator).fit(x, y)
        self.classes_ = self.estimator_.classes_
        self.coef_, self.intercept_ = self.estimator_.coef_, self.estimator_.intercept_
        self.temperature_ = float(self.temperature or 1.0)
        return self

    def decision_function(self, x: Any) -> np.ndarray:
        """Raw margins."""
        return self.estimator_.decision_function(x)


class BudgetedLogisticRegression(LogisticRegression):
    """LogisticRegression with an epoch budget (early stop: not converging is no warning) and a temperature.

    `calibrate` fits the softmax temperature on held-out rows, so a confidence means about the same chance of
    being right from one version to the next (and so does the threshold stored with it); T = 1 until then.
    """

    def fit(self, x: Any, y: Any, sample_weight: Any = None) -> BudgetedLogisticRegression:
        """Fit within the epoch budget."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        self.temperature_ = 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return super().fit(x, y, sample_weight=sample_weight)

    def calibrate(self, x: Any, y: Any) -> float:
        """Choose the temperature minimising the log-loss on held-out data (unknown labels ignored)."""
        self.temperature_ = fit_temperature(self.decision_function(x), self.classes_, y,
                                            getattr(self, "temperature_", 1.0))
        return self.temperature_

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities: softmax of the scores over the temperature (sklearn's own when T = 1)."""
        temperature = getattr(self, "temperature_", 1.0)
        if temperature == 1.0:
            return super().predict_proba(x)
        return softmax(_two_class(self.decision_function(x)).astype(np.float64) / temperature)


class MiniBatchSoftmax(SoftmaxOverScores, ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression fitted by mini-batch Adam: sparse columns lazily, dense ones with BLAS.

    Made for TF-IDF plus a dense block (the static MiniLM vectors): sklearn's SAG pays non-zeros x classes per
    row, so 256 dense columns triple its fit; here a step gathers only the batch's sparse columns (their
    weights and Adam moments), and the dense columns (any column set in at least half the rows, plus the
    intercept) are one matrix product. The learning rate decays linearly to 0 over `epochs`; the epoch budget
    is the early stop (BENCHMARKS.md, "Static block fitted by mini-batch Adam"). `calibrate` (from
    SoftmaxOverScores) fits the softmax temperature.
    """

    def __init__(self, epochs: int = 5, batch_size: int = 512, learning_rate: float = 0.02,
                 random_state: int = 42) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    def fit(self, x: Any, y: Any) -> MiniBatchSoftmax:
        """Fit the weights; the temperature is 1 until `calibrate`."""
        import scipy.sparse as sp

        x = sp.csr_matrix(x, dtype=np.float32)
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        n, d, k = x.shape[0], x.shape[1], len(self.classes_)
        dense = np.bincount(x.indices, minlength=d) * 2 >= n
        sparse_cols, dense_cols = np.flatnonzero(~dense), np.flatnonzero(dense)
        xs = x[:, sparse_cols].tocsr()
        xd = np.hstack([x[:, dense_cols].toarray(), np.ones((n, 1), np.float32)])  # + the intercept column
        w_s, w_d = _adam_softmax(xs, xd, y_idx, k, self.epochs, self.batch_size, self.learning_rate,
                                 np.random.default_rng(self.random_state))
        coef = np.zeros((d, k), np.float32)
        coef[sparse_cols], coef[dense_cols] = w_s, w_d[:-1]
        self.coef_, self.intercept_ = np.ascontiguousarray(coef.T), w_d[-1].astype(np.float64)
        self.temperature_ = 1.0
        return self

    def decision_function(self, x: Any) -> np.ndarray:
        """Raw scores x @ coef_.T + intercept_."""
        return np.asarray(x @ self.coef_.T, dtype=np.float64) + self.intercept_


def _adam_softmax(xs: Any, xd: np.ndarray, y_idx: np.ndarray, k: int, epochs: int, batch: int, rate: float,
                  rng: np.random.Generator, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Softmax-regression weights (sparse part, dense part) by mini-batch Adam with lazy sparse updates."""
    import scipy.sparse as sp

    n = xs.shape[0]
    w_s, m_s, v_s = (np.zeros((xs.shape[1], k), np.float32) for _ in range(3))
    w_d, m_d, v_d = (np.zeros((xd.shape[1], k), np.float32) for _ in range(3))
    total, step = epochs * -(-n // batch), 0
    for _ in range(epochs):
        order = rng.permutation(n)
        xs_epoch, xd_epoch, y_epoch = xs[order], xd[order], y_idx[order]
        for start in range(0, n, batch):
            xb = xs_epoch[start:start + batch]
            db, m = xd_epoch[start:start + batch], xb.shape[0]
            cols, local = np.unique(xb.indices, return_inverse=True)  # the batch's sparse columns, renumbered
            xl = sp.csr_matrix((xb.data, local.astype(np.int32).ravel(), xb.indptr), shape=(m, len(cols)))
            w_c = w_s[cols]
            grad = xl @ w_c + db @ w_d  # scores, then softmax minus the one-hot target, over the batch size
            grad -= grad.max(axis=1, keepdims=True)
            np.exp(grad, out=grad)
            grad /= grad.sum(axis=1, keepdims=True)
            grad[np.arange(m), y_epoch[start:start + m]] -= 1.0
            grad /= m
            step += 1
            a = rate * math.sqrt(1 - beta2**step) / (1 - beta1**step) * (1 - (step - 1) / total)
            m_c, v_c = m_s[cols], v_s[cols]
            for w, mom, var, g in ((w_c, m_c, v_c, xl.T @ grad), (w_d, m_d, v_d, db.T @ grad)):
                mom *= beta1
                mom += (1 - beta1) * g
                g *= g
                var *= beta2
                var += (1 - beta2) * g
                np.sqrt(var, out=g)
                g += eps
                np.divide(mom, g, out=g)
                w -= a * g
            w_s[cols], m_s[cols], v_s[cols] = w_c, m_c, v_c
    return w_s, w_d


def make_classifier(name: str = "lr", C: float = 10.0, random_state: int = 42) -> Any:  # noqa: N803
    """The final step of the pipeline, by name (see CLASSIFIERS); `C` is the inverse regularisation."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import LinearSVC

    if name == "lr":
        # measured on CLINC150 (BENCHMARKS.md): 10 SAG epochs on float32 features match lbfgs's accuracy ~15x faster
        return BudgetedLogisticRegression(C=C, solver="sag", tol=1e-4, max_iter=10, random_state=random_state)
    if name == "lr-lbfgs":
        return BudgetedLogisticRegression(C=C, solver="lbfgs", max_iter=1000, random_state=random_state)
    if name == "sgd":
        alpha = 1.0 / (C * 15000)
        return TemperatureScaled(SGDClassifier(loss="hinge", alpha=alpha, max_iter=30, tol=1e-3,
                                               random_state=random_state))
    if name == "svc":
        return TemperatureScaled(LinearSVC(C=C / 20.0, random_state=random_state))
    if name == "ens":
        from intelrouter.ensemble import AveragedLinear

        # `lr` and `svc` above fitted in two threads, averaged into one linear model (intelrouter/ensemble.py)
        return AveragedLinear(C=C, random_state=random_state)
    if name == "mb":
        # joint TF-IDF + dense-block fit by mini-batch Adam (MiniBatchSoftmax); C is not used: the epochs regularise
        return MiniBatchSoftmax(random_state=random_state)
    raise IntelRouterError(f"unknown classifier {name!r}: use one of {', '.join(CLASSIFIERS)}")


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
        self._lean: tuple[np.ndarray, np.ndarray] | None = None

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

    def _lean_linear(self) -> tuple[np.ndarray, np.ndarray]:
        if self._lean is None:
            clf = self.pipeline.steps[-1][1]
            # transposed, divided by the temperature once, float32 (half the memory a text's row gather touches):
            # per text, a row gather, one np.dot and the softmax are all that is left (BENCHMARKS.md)
            temperature = float(getattr(clf, "temperature_", 1.0))
            coef_t = np.ascontiguousarray((np.asarray(clf.coef_, dtype=np.float64).T / temperature).astype(np.float32))
            intercept = np.asarray(clf.intercept_, dtype=np.float64).ravel() / temperature
            self._lean = (coef_t, intercept)
        return self._lean

    def _proba(self, text: str) -> np.ndarray:
        coef_t, intercept = self._lean_linear()
        idx, vals, static = self.features.row_parts(text)
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
                router = pickle.load(fh)
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
            raise NotFoundError(f"model {model_uri} not found: {_first_line(exc)}") from None
        raise RegistryError(f"cannot fetch model {model_uri}: {_first_line(exc)}") from None
    except Exception as exc:  # network and file errors of the artifact store
        raise RegistryError(f"cannot fetch model {model_uri}: {_first_line(exc)}") from None
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


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
