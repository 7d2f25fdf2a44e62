"""`ens`: the shipped logistic regression and a LinearSVC, fitted side by side and averaged into ONE linear model.

Both members are fitted on the same features in two threads at once (sklearn's SAG loop and liblinear's `train`
run without the GIL, so on two free cores the wall time is about the slower member's, not the sum). `calibrate`
fits each member's softmax temperature on held-out rows, averages the calibrated scores —
coef_ = w * coef_lr / T_lr + (1 - w) * coef_svc / T_svc, the same for intercept_ — and fits one final temperature
on the combined scores. The result is a single (coef_, intercept_, temperature_) triple, so the Router's lean
one-text path and the serving cost are those of one linear model; the members are dropped after calibration
(unless `keep_members`), so the model on disk is no larger than `lr`'s.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.extmath import safe_sparse_dot

from intelrouter.errors import IntelRouterError
from intelrouter.model import SoftmaxOverScores, fit_temperature


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

    # --- fitting ---------------------------------------------------------------------------------

    def _members(self) -> tuple[Any, Any]:
        from intelrouter.model import make_classifier

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

    # --- predicting ------------------------------------------------------------------------------

    def decision_function(self, x: Any) -> np.ndarray:
        """The averaged scores (one column for two classes, like sklearn's linear models)."""
        scores = safe_sparse_dot(x, self.coef_.T, dense_output=True).astype(np.float64) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores
