"""The classifier family of the pipeline's last step, and its calibration, in one place.

Every classifier here gives scores whose softmax over a temperature T is its probability; `calibrate` fits T on
held-out rows, so a confidence means about the same chance of being right from one version to the next (and so
does the threshold stored with it). `make_classifier` picks one by name (the `classifier` setting):

- `lr`: logistic regression by SAG within an epoch budget (the early stop); `lr-lbfgs` the same, to convergence;
- `sgd`, `svc`: linear margin classifiers whose margins are temperature-scaled;
- `ens`: `lr` and `svc` fitted side by side in two threads and averaged into ONE linear model (sklearn's SAG loop
  and liblinear's `train` run without the GIL, so on two free cores the wall time is about the slower member's);
  `calibrate` fits each member's temperature, averages the calibrated scores —
  coef_ = w * coef_lr / T_lr + (1 - w) * coef_svc / T_svc, the same for intercept_ — and fits one final
  temperature; the members are then dropped, so the model on disk is no larger than `lr`'s;
- `mb`: softmax regression by mini-batch Adam, made for TF-IDF plus the dense static block.
"""

from __future__ import annotations

import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.svm import LinearSVC
from sklearn.utils.extmath import safe_sparse_dot

from intelrouter.errors import IntelRouterError
from intelrouter.names import CLASSIFIERS


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
        # `lr` and `svc` above fitted in two threads, averaged into one linear model (intelrouter/ensemble.py)
        return AveragedLinear(C=C, random_state=random_state)
    if name == "mb":
        # joint TF-IDF + dense-block fit by mini-batch Adam (MiniBatchSoftmax); C is not used: the epochs regularise
        return MiniBatchSoftmax(random_state=random_state)
    raise IntelRouterError(f"unknown classifier {name!r}: use one of {', '.join(CLASSIFIERS)}")


class AveragedLinear(SoftmaxOverScores, ClassifierMixin, BaseEstimator):
    """LR (SAG, 10 epochs, C) and LinearSVC (C / 20) averaged into one linear model with a fitted temperature.

    `weight` is the LR member's share w of the averaged scores (0.5: equal). Before `calibrate` the model
    averages the raw scores with equal weights at T = 1; after it, the members' temperatures, w and the final
    temperature are all fitted on the held-out rows given to `calibrate` (never on test rows).
    """

    def __init__(self, C: float = 10.0, weight: float = 0.5, random_state: int = 42,  # noqa: N803
                 n_jobs: int = 2, keep_members: bool = False) -> None:
        self.C = C
        self.weight = weight
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.keep_members = keep_members

    def _members(self) -> tuple[Any, Any]:
        return (make_classifier("lr", C=self.C, random_state=self.random_state),
                make_classifier("svc", C=self.C, random_state=self.random_state))

    def fit(self, x: Any, y: Any) -> AveragedLinear:
        """Fit both members on the same rows (in two threads when `n_jobs` > 1); equal weights, T = 1."""
        lr, svc = self._members()
        fit_seconds: dict[str, float] = {}

        def fit_one(name: str, clf: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            clf.fit(x, y)
            # wall and this thread's CPU seconds: CPU summed over the members above the wall time means both ran
            fit_seconds[name] = time.perf_counter() - t0
            fit_seconds[f"{name}_cpu"] = time.thread_time() - c0
            return clf

        if self.n_jobs > 1:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ens-fit") as pool:
                futures = [pool.submit(fit_one, "lr", lr), pool.submit(fit_one, "svc", svc)]
                lr, svc = (f.result() for f in futures)
        else:
            lr, svc = fit_one("lr", lr), fit_one("svc", svc)
        if not np.array_equal(lr.classes_, svc.classes_):  # pragma: no cover - same y, same sorted classes
            raise IntelRouterError("ensemble members disagree on the classes")
        self.members_: tuple[Any, ...] = (lr, svc)
        self.member_fit_s_ = fit_seconds
        self.classes_ = lr.classes_
        self.member_temperatures_ = (1.0, 1.0)
        self.weight_ = 0.5
        self.temperature_ = 1.0
        self._combine()
        return self

    def _combine(self) -> None:
        lr, svc = self.members_
        (t_lr, t_svc), w = self.member_temperatures_, self.weight_

        def mix(a: Any, b: Any) -> np.ndarray:
            return (w / t_lr) * np.asarray(a, dtype=np.float64) + ((1.0 - w) / t_svc) * np.asarray(b, dtype=np.float64)

        # float32 like `lr`'s own coefficients (SAG on float32 features): half the memory per model
        self.coef_ = mix(lr.coef_, svc.coef_).astype(np.float32)
        self.intercept_ = mix(lr.intercept_, svc.intercept_)

    def calibrate(self, x: Any, y: Any) -> float:
        """Fit the members' temperatures, combine with weight w, fit the final temperature; all on held-out rows."""
        if not getattr(self, "members_", None):
            raise IntelRouterError("this ensemble is already calibrated and its members were dropped; refit it")
        y = list(y)
        lr, svc = self.members_
        self.member_temperatures_ = (fit_temperature(lr.decision_function(x), self.classes_, y),
                                     fit_temperature(svc.decision_function(x), self.classes_, y))
        self.weight_ = float(self.weight)
        self._combine()
        self.temperature_ = fit_temperature(self.decision_function(x), self.classes_, y)
        if not self.keep_members:
            self.members_ = ()  # the combined coefficients are all that predicting needs
        return self.temperature_

    def decision_function(self, x: Any) -> np.ndarray:
        """The averaged scores (one column for two classes, like sklearn's linear models)."""
        scores = safe_sparse_dot(x, self.coef_.T, dense_output=True).astype(np.float64) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores
