"""Trust measured, not assumed: audits of labels no human gave, and each trusted provider's measured precision.

A random share of auto-approved queries (`audit_rate`, drawn from the query id, so a re-run picks the same ones) is
also sent to review; the human's answer confirms or corrects the provider. Its precision on the newest
`audit_window` answers, with a Wilson 95 % interval, decides whether its auto-approval runs: once it has
`audit_min_samples` answers and the interval's lower bound is below `provider_precision_floor`, auto-approval from
it pauses (its confident answers go to review, each one an audit) until the bound is back above the floor.

The `audits` table also holds the labels the training audit flagged (`intelrouter.audit`), answered the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.keys import bucket

SAMPLE_UNCERTAINTY = 0.5  # nothing is known about an audited label yet: its place in the review order


def in_sample(query_id: str, rate: float) -> bool:
    """Whether an auto-approved query belongs to the random audit sample (stable: the same id, the same answer)."""
    return rate > 0 and bucket("audit:" + query_id) < rate


def wilson(confirmed: int, audited: int) -> tuple[float, float]:
    """The Wilson score 95 % interval of a proportion (scipy's); (0, 1) when nothing was audited."""
    if audited <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(confirmed, audited).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class ProviderTrust:
    """One provider's measured precision on its newest audited answers, and whether its auto-approval pauses."""

    provider: str
    trusted: bool  # named in the trusted_providers setting
    audited: int  # answered audits measured (the newest audit_window)
    confirmed: int
    precision: float | None
    low: float | None
    high: float | None
    waiting: int  # audits sent to review, not answered yet
    paused: bool

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the monitoring report's `providers` rows)."""
        return asdict(self)


def _outcomes(conn: Connection, provider: str, window: int) -> list[str]:
    a = store.audits
    return list(conn.execute(
        select(a.c.outcome)
        .where(a.c.kind == store.AUDIT_SAMPLE, a.c.provider == provider, a.c.outcome.is_not(None))
        .order_by(a.c.answered_at.desc(), a.c.id.desc())
        .limit(window)
    ).scalars())


def provider_trust(conn: Connection, settings: Settings) -> list[ProviderTrust]:
    """Every trusted provider (and any other with audits): audited, confirmed, precision, interval, paused."""
    a = store.audits
    audited_providers = set(conn.execute(
        select(a.c.provider).where(a.c.kind == store.AUDIT_SAMPLE).distinct()
    ).scalars())
    out = []
    for provider in sorted(set(settings.trusted_providers) | {p for p in audited_providers if p}):
        outcomes = _outcomes(conn, provider, settings.audit_window)
        n, k = len(outcomes), sum(o == store.CONFIRMED for o in outcomes)
        low, high = wilson(k, n) if n else (None, None)
        waiting = store.count(
            conn, "SELECT COUNT(*) FROM audits WHERE kind = :k AND provider = :p AND outcome IS NULL",
            k=store.AUDIT_SAMPLE, p=provider,
        )
        trusted = provider in settings.trusted_providers
        paused = trusted and n >= settings.audit_min_samples and low is not None \
            and low < settings.provider_precision_floor
        out.append(ProviderTrust(provider, trusted, n, k, round(k / n, 4) if n else None,
                                 round(low, 4) if low is not None else None,
                                 round(high, 4) if high is not None else None, waiting, paused))
    return out


def paused_providers(conn: Connection, settings: Settings) -> set[str]:
    """Trusted providers whose auto-approval is paused right now (measured precision below the floor)."""
    return {t.provider for t in provider_trust(conn, settings) if t.paused}


def add_audits(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Record queries sent to review for an audit (query_id, kind, provider, source, label, uncertainty); one per
    query and kind, so a repeat adds nothing. Returns the query ids recorded now."""
    now = store.utcnow()
    values = [{"created_at": now, **row} for row in rows]
    if not values:
        return set()
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = (insert(store.audits).on_conflict_do_nothing(index_elements=["query_id", "kind"])
            .returning(store.audits.c.query_id))
    return set(conn.execute(stmt, values).scalars())


def record_outcomes(conn: Connection, answers: Mapping[str, str | None]) -> int:
    """A human answered these queries (label, or None for "none of these"): settle their open or changed audits."""
    if not answers:
        return 0
    a = store.audits
    ids = list(answers)
    changes = []
    for start in range(0, len(ids), 1000):
        for row in conn.execute(select(a.c.id, a.c.query_id, a.c.label, a.c.human_label, a.c.outcome)
                                .where(a.c.query_id.in_(ids[start:start + 1000]))):
            human = answers[row.query_id]
            outcome = store.NONE_FITS if human is None else store.CONFIRMED if human == row.label else store.CORRECTED
            if (row.outcome, row.human_label) != (outcome, human):
                changes.append({"b_id": row.id, "b_human": human, "b_outcome": outcome})
    if changes:
        conn.execute(update(a).where(a.c.id == bindparam("b_id")).values(
            human_label=bindparam("b_human"), outcome=bindparam("b_outcome"), answered_at=store.utcnow()), changes)
    return len(changes)
