"""Shadow replay: a candidate and @production answer the same recent traffic before the candidate gets users.

`replay(candidate, production, texts)` scores both routers and compares their answers: agreement, the
UNCERTAIN rate of each, the estimated accuracy of each (mean top confidence, `intelrouter.estimate`) and
which labels gain or lose answers. `limits(report, rules)` is the pure decision: the reasons that keep a
candidate in testing (empty: it may go on to the canary). Nothing here reads the store or MLflow.

@production's answers on the traffic it served are already in the `queries` table; a caller that has them
can build them with `Answers(labels, confidences)` and `compare(answers(candidate, texts), those)`, which
halves the replay's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from intelrouter.estimate import estimated_accuracy
from intelrouter.model import UNCERTAIN, Router

if TYPE_CHECKING:
    from intelrouter.config import Settings

BATCH = 2048  # texts per predict_proba call: bounds memory to BATCH x labels floats
TOP_SHIFTS = 10  # label shifts kept in a report, largest first
TAG_SHIFTS = 5  # of which the version tag lists this many
TAG_MAX_CHARS = 250  # MLflow tag values are short: the shift tag is cut to this length


@dataclass(frozen=True)
class Answers:
    """One router's answers, row-aligned with the texts: answered label (UNCERTAIN below threshold), top confidence.

    From the query log: `predicted_label` and `confidence` of the rows the current @production version answered
    as the production variant.
    """

    labels: np.ndarray  # object array of str
    confidences: np.ndarray  # float64

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=object))
        object.__setattr__(self, "confidences", np.asarray(self.confidences, dtype=np.float64))
        if len(self.labels) != len(self.confidences):
            raise ValueError("labels and confidences differ in length")


def answers(router: Router, texts: Sequence[str], batch: int = BATCH) -> Answers:
    """The router's answers on the texts (each distinct text predicted once), as `router.predict` gives them."""
    distinct: dict[str, int] = {}
    where = np.fromiter((distinct.setdefault(t, len(distinct)) for t in texts), dtype=np.intp, count=len(texts))
    unique = list(distinct)
    names = np.asarray(router.labels + [UNCERTAIN], dtype=object)
    index = np.empty(len(unique), dtype=np.intp)
    conf = np.empty(len(unique), dtype=np.float64)
    margin = float(getattr(router, "margin", 0.0) or 0.0)
    for start in range(0, len(unique), batch):
        proba = router.predict_proba(unique[start:start + batch])
        top = proba.argmax(axis=1)
        best = proba[np.arange(len(top)), top]
        uncertain = best < router.threshold
        if margin > 0.0 and proba.shape[1] > 1:  # Rasa's ambiguity rule, as Router._answer applies it
            uncertain |= best - np.partition(proba, -2, axis=1)[:, -2] < margin
        index[start:start + len(top)] = np.where(uncertain, len(names) - 1, top)
        conf[start:start + len(top)] = best
    return Answers(names[index][where], conf[where])


@dataclass(frozen=True)
class LabelShift:
    """How one label's answers move from production to the candidate (UNCERTAIN is a label here)."""

    label: str
    production: int  # texts production answers with this label
    candidate: int  # texts the candidate answers with it
    gained: int  # ... of which production answered otherwise
    lost: int  # texts production answers with it and the candidate otherwise

    @property
    def net(self) -> int:
        """Answers gained minus lost (= candidate - production)."""
        return self.candidate - self.production


@dataclass(frozen=True)
class ShadowReport:
    """The candidate against @production on the same texts; rates are shares in [0, 1], changes are candidate minus
    production."""

    rows: int
    agreement: float  # share of texts both answer with the same label (UNCERTAIN included)
    production_uncertain_rate: float
    candidate_uncertain_rate: float
    production_estimate: float  # estimated accuracy: mean top confidence
    candidate_estimate: float
    shifts: tuple[LabelShift, ...]  # the TOP_SHIFTS largest movers, largest |net| first
    labels_changed: int  # labels whose answer count changed at all (shifts may list fewer)

    @property
    def uncertain_change(self) -> float:
        """Candidate minus production UNCERTAIN rate (0.05 = 5 points more fallbacks)."""
        return self.candidate_uncertain_rate - self.production_uncertain_rate

    @property
    def estimate_change(self) -> float:
        """Candidate minus production estimated accuracy."""
        return self.candidate_estimate - self.production_estimate

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (for the run's artifact and the canary decision log)."""
        out = asdict(self)
        out["shifts"] = [{**asdict(s), "net": s.net} for s in self.shifts]
        out["uncertain_change"] = self.uncertain_change
        out["estimate_change"] = self.estimate_change
        return out

    def as_tags(self) -> dict[str, str]:
        """Flat `shadow_*` string tags for a registered model version."""
        moves = ", ".join(f"{s.label} {s.net:+d} (+{s.gained}/-{s.lost})" for s in self.shifts[:TAG_SHIFTS])
        return {
            "shadow_rows": str(self.rows),
            "shadow_agreement": f"{self.agreement:.4f}",
            "shadow_uncertain_rate": f"{self.candidate_uncertain_rate:.4f}",
            "shadow_production_uncertain_rate": f"{self.production_uncertain_rate:.4f}",
            "shadow_uncertain_change": f"{self.uncertain_change:+.4f}",
            "shadow_estimated_accuracy": f"{self.candidate_estimate:.4f}",
            "shadow_production_estimated_accuracy": f"{self.production_estimate:.4f}",
            "shadow_estimate_change": f"{self.estimate_change:+.4f}",
            "shadow_labels_changed": str(self.labels_changed),
            "shadow_top_shifts": moves[:TAG_MAX_CHARS],
        }


def compare(candidate: Answers, production: Answers, top: int = TOP_SHIFTS) -> ShadowReport:
    """The shadow report of two routers' answers on the same texts (row i of each is text i)."""
    n = len(candidate.labels)
    if n != len(production.labels):
        raise ValueError("candidate and production must answer the same texts")
    if n == 0:
        raise ValueError("no texts to replay")
    names, codes = np.unique(np.concatenate([candidate.labels, production.labels]).astype(str), return_inverse=True)
    cand, prod = codes[:n], codes[n:]
    moved = cand != prod
    counts = [np.bincount(c, minlength=len(names)) for c in (prod, cand, cand[moved], prod[moved])]
    shifts = sorted(
        (LabelShift(str(label), *map(int, row)) for label, row in zip(names, np.column_stack(counts), strict=True)
         if row[2] or row[3]),
        key=lambda s: (-abs(s.net), -(s.gained + s.lost), s.label),
    )
    return ShadowReport(
        rows=n,
        agreement=float(1.0 - moved.mean()),
        production_uncertain_rate=float(np.mean(production.labels == UNCERTAIN)),
        candidate_uncertain_rate=float(np.mean(candidate.labels == UNCERTAIN)),
        production_estimate=estimated_accuracy(production.confidences),
        candidate_estimate=estimated_accuracy(candidate.confidences),
        shifts=tuple(shifts[:top]),
        labels_changed=len(shifts),
    )


def replay(candidate: Router, production: Router, texts: Sequence[str], batch: int = BATCH) -> ShadowReport:
    """Score both routers on the same texts and compare their answers."""
    return compare(answers(candidate, texts, batch), answers(production, texts, batch))


@dataclass(frozen=True)
class ShadowRules:
    """What a candidate must meet on shadow traffic (shares in [0, 1]; the defaults are the settings')."""

    min_agreement: float = 0.80
    max_uncertain_rise: float = 0.05
    max_estimate_drop: float = 0.03
    min_rows: int = 500  # below this the replay says too little: not judged (a note, not a failure)

    @classmethod
    def from_settings(cls, settings: Settings) -> ShadowRules:
        """The rules from `intelrouter.config.Settings` (shadow_* settings)."""
        return cls(min_agreement=settings.shadow_min_agreement,
                   max_uncertain_rise=settings.shadow_max_uncertain_rise,
                   max_estimate_drop=settings.shadow_max_estimate_drop, min_rows=settings.shadow_min_queries)


def not_judged(report: ShadowReport, rules: ShadowRules) -> str | None:
    """The note to log when the replay had too few rows to judge (then `limits` passes), else None."""
    if report.rows >= rules.min_rows:
        return None
    return f"shadow replay on {report.rows} queries, fewer than {rules.min_rows}: limits not judged"


def limits(report: ShadowReport, rules: ShadowRules) -> list[str]:
    """The reasons that keep the candidate in testing; empty: it passes (or there were too few rows to judge).

    Low agreement holds a candidate only when it does not expect to be right more often than production (its
    estimated accuracy is not higher): a much better retrain of a weak production must change many answers, and
    the simulation showed an unconditional floor holding back every good candidate of a young installation."""
    if not_judged(report, rules):
        return []
    reasons = []
    if report.agreement < rules.min_agreement and report.estimate_change <= 0:
        reasons.append(f"agrees with production on {report.agreement:.1%} of {report.rows} recent queries, "
                       f"below the floor {rules.min_agreement:.0%}")
    if report.uncertain_change > rules.max_uncertain_rise:
        reasons.append(f"UNCERTAIN rate {report.candidate_uncertain_rate:.1%} vs production "
                       f"{report.production_uncertain_rate:.1%}: up {report.uncertain_change * 100:.1f} points, "
                       f"more than {rules.max_uncertain_rise * 100:.1f}")
    if -report.estimate_change > rules.max_estimate_drop:
        reasons.append(f"estimated accuracy {report.candidate_estimate:.1%} vs production "
                       f"{report.production_estimate:.1%}: down {-report.estimate_change * 100:.1f} points, "
                       f"more than {rules.max_estimate_drop * 100:.1f}")
    return reasons
