"""The shadow step on a real store: which captured queries are replayed, @production's answers taken from the query
log, and the verdict that lets a candidate go on to its canary or holds it in testing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import shadow_support as support

from intelrouter import store
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.model import Router
from intelrouter.rollout import recent_traffic, replay_recent, shadow, version_shadow
from intelrouter.shadow import answers, replay

NOW = store.utcnow().replace(microsecond=0)


def _log(settings: Settings, router: Router | None, texts: list[str], tag: str, hours_ago: float,
         version: str | None = "1", variant: str | None = "production") -> None:
    """Queries as the log holds them: the router's answers (or a teacher's made-up one), `hours_ago` before NOW."""
    preds = router.predict(texts) if router is not None else None
    log_queries(settings, [
        {"id": f"{tag}-{i}", "text": t, "predicted_label": preds[i].label if preds else "teacher_label",
         "top_label": preds[i].top_label if preds else "teacher_label",
         "confidence": preds[i].confidence if preds else 0.97, "uncertain": preds[i].uncertain if preds else False,
         "model_version": version, "variant": variant, "provider": "intelrouter" if preds else "teacher",
         "created_at": NOW - timedelta(hours=hours_ago, seconds=i)}
        for i, t in enumerate(texts)])


def _texts(n: int, start: int = 0) -> list[str]:
    return support.inscope("test")["text"].tolist()[start:start + n]


def test_recent_traffic_is_the_newest_queries_of_the_window_and_marks_what_production_served(
        settings: Settings) -> None:
    production = support.production()
    _log(settings, production, _texts(30), "served", hours_ago=1)
    _log(settings, support.retrained(), _texts(10, 30), "canary", hours_ago=2, version="2", variant="staging")
    _log(settings, None, _texts(10, 40), "teacher", hours_ago=3, version=None, variant=None)
    _log(settings, production, _texts(5, 50), "old-version", hours_ago=4, version="0")
    _log(settings, production, _texts(20, 60), "last-month", hours_ago=24 * 8)  # outside the 7 days
    traffic = recent_traffic(settings, "1", now=NOW)
    assert len(traffic.texts) == 55 and traffic.texts[0] == _texts(1)[0]  # newest first
    assert traffic.served.tolist() == [True] * 30 + [False] * 25
    preds = production.predict(_texts(30))
    assert traffic.labels[:30].tolist() == [p.label for p in preds]
    np.testing.assert_allclose(traffic.confidences[:30], [p.confidence for p in preds])
    capped = recent_traffic(load_settings(shadow_max_queries=12, shadow_days=1), "1", now=NOW)
    assert len(capped.texts) == 12 and capped.texts == traffic.texts[:12]
    assert capped.since == NOW - timedelta(days=1)


def test_production_answers_come_from_the_log_and_production_is_scored_only_for_the_rest(settings: Settings) -> None:
    production, candidate = support.production(), support.retrained()
    texts = _texts(300)
    _log(settings, production, texts, "served", hours_ago=1)
    traffic = recent_traffic(settings, "1", now=NOW)

    def never() -> Router:
        raise AssertionError("production was loaded although it served every query")

    assert replay_recent(traffic, candidate, never) == replay(candidate, production, traffic.texts)
    # what production answered is read from the log: a log that says otherwise changes the agreement
    with store.connect(settings) as conn:
        conn.execute(store.queries.update().where(store.queries.c.id.in_([f"served-{i}" for i in range(60)]))
                     .values(predicted_label="made_up_label"))
    changed = replay_recent(recent_traffic(settings, "1", now=NOW), candidate, never)
    logged = np.array(["made_up_label"] * 60 + [p.label for p in production.predict(texts[60:])], dtype=object)
    assert changed.agreement == pytest.approx(np.mean(answers(candidate, texts).labels == logged))
    assert changed.agreement < replay(candidate, production, texts).agreement - 0.15
    # rows production did not serve are scored with production, loaded once
    _log(settings, None, _texts(40, 300), "teacher", hours_ago=0.5, version=None, variant=None)
    loads: list[int] = []
    mixed = replay_recent(recent_traffic(settings, "1", now=NOW), candidate,
                          lambda: loads.append(1) or production)  # type: ignore[func-returns-value]
    assert loads == [1] and mixed.rows == 340
    teacher_rows = answers(production, _texts(40, 300))
    assert mixed.production_uncertain_rate == pytest.approx(
        (np.sum(teacher_rows.labels == "UNCERTAIN") + changed.production_uncertain_rate * 300) / 340)


def test_a_retrain_passes_and_a_candidate_on_shuffled_labels_is_held_with_reasons(settings: Settings) -> None:
    production = support.production()
    test = support.clinc()["test"]
    traffic = _texts(900) + test.loc[test["label"] == "oos", "text"].head(100).tolist()
    _log(settings, production, traffic, "served", hours_ago=2)
    good = shadow(settings, support.retrained(), "1", now=NOW, production=lambda: production)
    assert good.status == "passed" and not good.held and good.reasons == []
    assert good.report.rows == 1000 and good.logged_rows == 1000 and good.report.agreement > 0.9
    assert good.production_version == "1" and good.until == NOW.isoformat()
    bad = shadow(settings, support.shuffled(0.4), "1", now=NOW, production=lambda: production)
    assert bad.status == "held" and bad.held and len(bad.reasons) == 3
    tags = bad.tags()
    assert tags["shadow"] == "held" and tags["shadow_reasons"] == "; ".join(bad.reasons)
    assert tags["shadow_agreement"] == f"{bad.report.agreement:.4f}" and tags["shadow_logged_rows"] == "1000"
    assert version_shadow({**tags, "semver": "1.2.0", "hold_reasons": "x"}) == {**tags, "hold_reasons": "x"}
    assert bad.as_dict()["report"]["rows"] == 1000


def test_no_verdict_without_a_gate_pass_a_production_or_enough_traffic(settings: Settings) -> None:
    candidate = support.retrained()
    assert shadow(settings, candidate, "1", passed=False).status == "skipped"
    first = shadow(settings, candidate, None)
    assert first.status == "skipped" and "first model" in first.note and first.tags()["shadow"] == "skipped"
    empty = shadow(settings, candidate, "1", now=NOW)
    assert empty.status == "not judged" and "no captured queries in the last 7 days" in empty.note
    _log(settings, support.production(), _texts(120), "few", hours_ago=1)
    few = shadow(settings, support.shuffled(0.4), "1", now=NOW)  # broken, but 120 queries say too little
    assert few.status == "not judged" and not few.held and few.report.rows == 120
    assert few.note == "shadow replay on 120 queries, fewer than 500: limits not judged"
