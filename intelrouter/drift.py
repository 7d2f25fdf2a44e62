"""Drift: does recent traffic still look like what @production learnt from?

Three pure checks on arrays a caller reads from the store and the registry: the predicted-label mix against
the training labels (`label_drift`), the top-confidence distribution against the model's held-out confidences
(`confidence_drift`) — both by the population stability index — and the share of words never seen in
training (`unseen_word_share`). `drift_report` bundles them; `DriftReport.alerts()` gives the monitoring
report's alert entries.

What the checks compare against is stored with each model when it is trained (`reference`, in the Router's
`info["drift_reference"]`, a few kilobytes): the label counts of its training rows, its top confidences on its
held-out test rows (at most 1 000 order statistics) and the share of held-out words it has no word feature for.
The unseen-word check alerts on the rise over that held-out share, not on an absolute share: what counts as a
new word depends on the model's vocabulary (`known_words`), and held-out rows already have some.

A PSI test flags drift only when the index is above its threshold *and* beyond sampling noise (a chi-square
test of homogeneity on the same counts): PSI is biased upwards on small samples — a day of 300 queries spread
over 150 labels leaves many bins empty and scores PSI ≈ 0.8 with nothing changed — and that must not alert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2_contingency

from intelrouter.features import normalise, words_of
from intelrouter.model import UNCERTAIN, Router

# The conventional PSI reading (Siddiqi, "Credit Risk Scorecards", 2006; the industry rule since): below 0.1
# no real shift, 0.1-0.2 a moderate shift worth watching, above 0.2 a significant shift.
PSI_WATCH = 0.1
PSI_DRIFT = 0.2
EPS = 1e-4  # share given to an empty bin, so that log(actual / expected) stays finite
ALPHA = 0.01  # a PSI above its threshold alerts only when sampling noise explains it with less than 1 % chance
CONFIDENCE_BINS = 10  # deciles of the reference confidences
UNSEEN_CEILING = 0.05  # the setting's default rise over the held-out share: drift_unseen_share_ceiling in config.py
REFERENCE_CONFIDENCES = 1000  # held-out confidences kept with a model: evenly spaced order statistics


def psi(expected_counts: Sequence[float] | np.ndarray, actual_counts: Sequence[float] | np.ndarray,
        eps: float = EPS) -> float:
    """Population stability index sum((a - e) * ln(a / e)) over matching bins; empty bins count as share `eps`."""
    e, a = np.asarray(expected_counts, dtype=np.float64), np.asarray(actual_counts, dtype=np.float64)
    if e.ndim != 1 or e.shape != a.shape:
        raise ValueError("expected and actual counts must be 1-D and of the same length")
    if (e < 0).any() or (a < 0).any() or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total on each side")
    pe, pa = np.maximum(e / e.sum(), eps), np.maximum(a / a.sum(), eps)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


@dataclass(frozen=True)
class DriftTest:
    """One PSI test: the statistic, its threshold, and whether it drifted (above threshold and beyond noise)."""

    name: str
    statistic: float
    threshold: float
    drifted: bool
    p_value: float  # chi-square test of homogeneity on the same counts: chance of this from sampling alone
    bins: int
    n_reference: int
    n_recent: int

    @property
    def message(self) -> str:
        """One line: the statistic against its threshold and the verdict."""
        verdict = ("drift" if self.drifted else "above the threshold but within sampling noise"
                   if self.statistic > self.threshold else "a moderate shift, to watch"
                   if self.statistic > PSI_WATCH else "no drift")
        return (f"{self.name}: PSI {self.statistic:.3f} (threshold {self.threshold:g}, p {self.p_value:.2g}) "
                f"over {self.bins} bins, {self.n_recent} recent vs {self.n_reference} reference: {verdict}")


def psi_test(name: str, expected_counts: Sequence[float] | np.ndarray, actual_counts: Sequence[float] | np.ndarray,
             threshold: float = PSI_DRIFT, alpha: float = ALPHA, eps: float = EPS) -> DriftTest:
    """PSI of two count vectors as a DriftTest: drifted when above `threshold` and the chi-square p below `alpha`."""
    statistic = psi(expected_counts, actual_counts, eps)
    table = np.vstack([expected_counts, actual_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]  # a bin empty on both sides says nothing
    p_value = float(chi2_contingency(table, correction=False).pvalue) if table.shape[1] > 1 else 1.0
    return DriftTest(name, statistic, threshold, bool(statistic > threshold and p_value < alpha), p_value,
                     len(expected_counts), int(round(table[0].sum())), int(round(table[1].sum())))


def label_drift(train_label_counts: Mapping[str, int], recent_predicted: Sequence[str], *,
                expected_uncertain_rate: float | None = None, threshold: float = PSI_DRIFT,
                alpha: float = ALPHA) -> DriftTest:
    """PSI of the recent predicted labels against the training label counts, UNCERTAIN a bin of its own.

    Training data has no UNCERTAIN rows: its bin expects `expected_uncertain_rate` (e.g. the model's uncertain
    rate on its test rows) or, when None, exactly the recent rate — neutral, so the test then measures the mix
    of answered labels and the fallback rate is left to its own alert. Leave out-of-scope rows out of the counts.
    """
    if expected_uncertain_rate is not None and not 0 <= expected_uncertain_rate < 1:
        raise ValueError("expected_uncertain_rate must lie in [0, 1)")
    found = Counter(map(str, recent_predicted))
    labels = sorted((set(train_label_counts) | set(found)) - {UNCERTAIN})
    actual = np.array([found.get(label, 0) for label in labels] + [found.get(UNCERTAIN, 0)], dtype=np.float64)
    expected = np.array([train_label_counts.get(label, 0) for label in labels], dtype=np.float64)
    n_train = expected.sum()
    if n_train <= 0 or actual.sum() <= 0:
        raise ValueError("label drift needs training label counts and recent predictions")
    rate = actual[-1] / actual.sum() if expected_uncertain_rate is None else expected_uncertain_rate
    expected = np.append(expected * (1 - rate), n_train * rate)  # shares scaled to make room for UNCERTAIN
    return psi_test("predicted labels", expected, actual, threshold, alpha)


def confidence_drift(reference_confidences: Sequence[float] | np.ndarray,
                     recent_confidences: Sequence[float] | np.ndarray, bins: int = CONFIDENCE_BINS, *,
                     threshold: float = PSI_DRIFT, alpha: float = ALPHA) -> DriftTest:
    """PSI of recent top confidences over the reference's quantile bins (deciles by default; tied edges merge).

    The reference is @production's top confidences on held-out rows (not the rows it was fitted on, whose
    confidences are higher than any traffic's).
    """
    ref = np.asarray(reference_confidences, dtype=np.float64)
    new = np.asarray(recent_confidences, dtype=np.float64)
    if len(ref) == 0 or len(new) == 0:
        raise ValueError("confidence drift needs reference and recent confidences")
    # bins (-inf, e1], (e1, e2], ..., (ek, inf) with reference values as edges: none is empty on the reference side
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf"))
    edges = edges[edges < ref.max()]
    count = lambda x: np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)  # noqa: E731
    return psi_test("confidences", count(ref), count(new), threshold, alpha)


def vocabulary_of(texts: Iterable[str]) -> set[str]:
    """The words of some texts, as the features see them (normalised, split by `words_of`)."""
    return {w for text in texts for w in words_of(normalise(text))}


def unseen_word_share(vocabulary: Collection[str] | Callable[[str], bool], texts: Iterable[str]) -> float:
    """Share of the word occurrences in `texts` not in `vocabulary` (a set, or a callable: is this word known?)."""
    known = vocabulary if callable(vocabulary) else vocabulary.__contains__
    total = unseen = 0
    for text in texts:
        words = words_of(normalise(text))
        total += len(words)
        unseen += sum(1 for w in words if not known(w))
    return unseen / total if total else 0.0


@dataclass(frozen=True)
class DriftReport:
    """The three drift checks of one window of traffic against @production's training data."""

    labels: DriftTest
    confidences: DriftTest
    unseen_share: float | None  # None: the model has no word features to tell new words by
    unseen_ceiling: float  # largest rise of the unseen share over `unseen_reference`
    n_recent: int
    unseen_reference: float = 0.0  # the share in the model's held-out rows when it was trained

    @property
    def unseen_rise(self) -> float | None:
        """Recent unseen-word share minus the held-out one (None without word features)."""
        return None if self.unseen_share is None else self.unseen_share - self.unseen_reference

    def alerts(self, min_queries: int = 1) -> list[dict[str, Any]]:
        """Alert entries (kind, message, value, limit: the fields of `intelrouter.report.Alert`); none below
        `min_queries` recent queries."""
        if self.n_recent < min_queries:
            return []
        out = [{"kind": kind, "message": test.message, "value": test.statistic, "limit": test.threshold}
               for kind, test in (("label_drift", self.labels), ("confidence_drift", self.confidences))
               if test.drifted]
        rise = self.unseen_rise
        if rise is not None and rise > self.unseen_ceiling:
            limit = self.unseen_reference + self.unseen_ceiling
            out.append({"kind": "unseen_words", "value": self.unseen_share, "limit": limit,
                        "message": f"{self.unseen_share:.1%} of the words in {self.n_recent} recent queries were "
                                   f"never seen in training, {rise * 100:.1f} points above the "
                                   f"{self.unseen_reference:.1%} of its held-out rows (ceiling +"
                                   f"{self.unseen_ceiling * 100:.1f} points)"})
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, each test with its message."""
        out = asdict(self)
        out["labels"]["message"], out["confidences"]["message"] = self.labels.message, self.confidences.message
        out["unseen_rise"] = self.unseen_rise
        return out


def drift_report(
    train_label_counts: Mapping[str, int], reference_confidences: Sequence[float] | np.ndarray,
    vocabulary: Collection[str] | Callable[[str], bool] | None, recent_texts: Sequence[str],
    recent_predicted: Sequence[str], recent_confidences: Sequence[float] | np.ndarray, *,
    expected_uncertain_rate: float | None = None, psi_threshold: float = PSI_DRIFT,
    unseen_ceiling: float = UNSEEN_CEILING, unseen_reference: float = 0.0, alpha: float = ALPHA,
) -> DriftReport:
    """All three checks on one window of traffic (texts, @production's answered labels and top confidences);
    `vocabulary` None skips the unseen-word check."""
    return DriftReport(
        labels=label_drift(train_label_counts, recent_predicted, expected_uncertain_rate=expected_uncertain_rate,
                           threshold=psi_threshold, alpha=alpha),
        confidences=confidence_drift(reference_confidences, recent_confidences, threshold=psi_threshold,
                                     alpha=alpha),
        unseen_share=None if vocabulary is None else unseen_word_share(vocabulary, recent_texts),
        unseen_ceiling=unseen_ceiling,
        n_recent=len(recent_texts),
        unseen_reference=unseen_reference,
    )


def known_words(router: Router) -> Callable[[str], bool] | None:
    """Is a word one the model has a word feature for (a unigram of its fitted word vocabulary, stemmed as the
    features stem)? None when the model has no word features."""
    vectorizers = getattr(router.features, "vectorizers_", [])
    vec = next((v for v in vectorizers if getattr(v, "analyzer", None) == "word"), None)
    if vec is None:
        return None
    vocabulary, stemmer = vec.vocabulary_, getattr(vec.tokenizer, "stems", None)
    seen: dict[str, bool] = {}

    def known(word: str) -> bool:
        hit = seen.get(word)
        if hit is None:
            hit = seen[word] = (stemmer([word])[0] if stemmer else word) in vocabulary
        return hit

    return known


def reference(router: Router, train_labels: Iterable[str], held_out_texts: Sequence[str],
              held_out_confidences: Sequence[float] | np.ndarray, keep: int = REFERENCE_CONFIDENCES
              ) -> dict[str, Any]:
    """What drift monitoring compares a model's traffic with, computed when it is trained (JSON-ready, small):
    training label counts, held-out top confidences (at most `keep` evenly spaced order statistics) and the
    share of held-out words the model has no word feature for (None without word features)."""
    conf = np.sort(np.asarray(held_out_confidences, dtype=np.float64))
    if len(conf) > keep:
        conf = conf[np.linspace(0, len(conf) - 1, keep).round().astype(int)]
    known = known_words(router)
    return {
        "label_counts": {str(k): int(v) for k, v in sorted(Counter(map(str, train_labels)).items())},
        "confidences": [round(float(c), 6) for c in conf],
        "held_out_rows": len(held_out_texts),
        "unseen_share": None if known is None or not len(held_out_texts)
        else round(unseen_word_share(known, held_out_texts), 4),
    }


def from_reference(ref: Mapping[str, Any], router: Router, recent_texts: Sequence[str],
                   recent_predicted: Sequence[str], recent_confidences: Sequence[float] | np.ndarray, *,
                   psi_threshold: float = PSI_DRIFT, unseen_ceiling: float = UNSEEN_CEILING,
                   alpha: float = ALPHA) -> DriftReport:
    """`drift_report` of recent traffic against a model's stored `reference` (its vocabulary from the router)."""
    unseen_reference = ref.get("unseen_share")
    return drift_report(
        ref["label_counts"], ref["confidences"], known_words(router) if unseen_reference is not None else None,
        recent_texts, recent_predicted, recent_confidences, psi_threshold=psi_threshold,
        unseen_ceiling=unseen_ceiling, unseen_reference=float(unseen_reference or 0.0), alpha=alpha)
