"""Shadow replay: two routers on the same traffic, the report, its tags, and the limits that hold a candidate back."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import shadow_support as support

from intelrouter.config import load_settings
from intelrouter.model import UNCERTAIN
from intelrouter.shadow import (
    Answers,
    LabelShift,
    ShadowReport,
    ShadowRules,
    answers,
    compare,
    limits,
    not_judged,
    replay,
)


def traffic() -> list[str]:
    """Recent traffic: the in-scope test queries of the 30 intents and 100 out-of-scope ones."""
    test = support.clinc()["test"]
    return support.inscope("test")["text"].tolist() + test.loc[test["label"] == "oos", "text"].head(100).tolist()


def report(**changes: object) -> ShadowReport:
    """A hand-made report that passes the default rules, with some fields changed."""
    base = dict(rows=1000, agreement=0.9, production_uncertain_rate=0.10, candidate_uncertain_rate=0.12,
                production_estimate=0.90, candidate_estimate=0.89, shifts=(), labels_changed=0)
    return ShadowReport(**{**base, **changes})  # type: ignore[arg-type]


def test_answers_are_what_the_router_predicts_each_text_once() -> None:
    router = support.production()
    texts = traffic()[:300]
    texts = texts + texts[:50]  # repeats are predicted once and answered alike
    got = answers(router, texts, batch=64)
    preds = router.predict(texts)
    assert got.labels.tolist() == [p.label for p in preds]
    np.testing.assert_array_equal(got.confidences, [p.confidence for p in preds])
    assert UNCERTAIN in got.labels.tolist()
    strict = copy.deepcopy(router)
    strict.margin = 0.3  # Rasa's ambiguity rule turns more answers UNCERTAIN: replayed as the router applies it
    ambiguous = answers(strict, texts)
    assert ambiguous.labels.tolist() == [p.label for p in strict.predict(texts)]
    assert (ambiguous.labels == UNCERTAIN).sum() > (got.labels == UNCERTAIN).sum()


def test_a_router_against_itself_agrees_everywhere() -> None:
    router = support.production()
    rep = replay(router, router, traffic())
    assert rep.rows == len(traffic())
    assert rep.agreement == 1.0
    assert rep.shifts == () and rep.labels_changed == 0
    assert rep.uncertain_change == 0.0 and rep.estimate_change == 0.0
    assert 0 < rep.candidate_uncertain_rate < 0.5
    assert limits(rep, ShadowRules()) == []


def test_an_ordinary_retrain_passes_and_a_candidate_on_shuffled_labels_is_held_back() -> None:
    production, texts, rules = support.production(), traffic(), ShadowRules()
    retrain = replay(support.retrained(), production, texts)
    assert retrain.agreement > 0.9
    assert limits(retrain, rules) == []
    broken = replay(support.shuffled(0.4), production, texts)
    reasons = limits(broken, rules)
    assert broken.agreement < rules.min_agreement
    assert broken.uncertain_change > rules.max_uncertain_rise
    assert broken.estimate_change < -rules.max_estimate_drop
    assert len(reasons) == 3
    assert "agrees with production" in reasons[0] and "UNCERTAIN rate" in reasons[1]
    assert "estimated accuracy" in reasons[2]
    # the labels that gain answers most are listed first; UNCERTAIN is one of them here
    assert broken.shifts[0].net > 0 and abs(broken.shifts[0].net) >= abs(broken.shifts[-1].net)
    assert UNCERTAIN in [s.label for s in broken.shifts]


def test_shifts_count_answers_gained_and_lost_per_label() -> None:
    production = Answers(["a", "a", "b", UNCERTAIN, "c", "c"], [0.9, 0.8, 0.7, 0.3, 0.9, 0.9])
    candidate = Answers(["a", "b", "b", "b", "c", "c"], [0.9, 0.7, 0.8, 0.7, 0.9, 0.9])
    rep = compare(candidate, production)
    assert rep.agreement == pytest.approx(4 / 6)
    assert rep.production_uncertain_rate == pytest.approx(1 / 6) and rep.candidate_uncertain_rate == 0.0
    assert rep.uncertain_change == pytest.approx(-1 / 6)
    assert rep.production_estimate == pytest.approx(4.5 / 6) and rep.candidate_estimate == pytest.approx(4.9 / 6)
    # largest |net| first, then most churn, then by name
    assert rep.shifts == (LabelShift("b", 1, 3, 2, 0), LabelShift(UNCERTAIN, 1, 0, 0, 1), LabelShift("a", 2, 1, 0, 1))
    assert [s.net for s in rep.shifts] == [2, -1, -1]  # c never moved: not listed
    assert rep.labels_changed == 3
    bounded = compare(candidate, production, top=1)
    assert bounded.shifts == rep.shifts[:1] and bounded.labels_changed == 3
    with pytest.raises(ValueError, match="same texts"):
        compare(candidate, Answers(["a"], [0.5]))
    with pytest.raises(ValueError, match="no texts"):
        compare(Answers([], []), Answers([], []))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        ({"agreement": 0.79}, ["agrees with production on 79.0% of 1000 recent queries, below the floor 80%"]),
        ({"candidate_uncertain_rate": 0.16},
         ["UNCERTAIN rate 16.0% vs production 10.0%: up 6.0 points, more than 5.0"]),
        ({"candidate_uncertain_rate": 0.149}, []),  # just within the limit
        ({"candidate_estimate": 0.86},
         ["estimated accuracy 86.0% vs production 90.0%: down 4.0 points, more than 3.0"]),
        ({"candidate_estimate": 0.95, "candidate_uncertain_rate": 0.0}, []),  # better is never a reason
        ({"agreement": 0.7, "candidate_estimate": 0.93}, []),  # changes many answers, expecting to be right more often
        ({"agreement": 0.7, "candidate_estimate": 0.9}, [  # changes many answers for no expected gain
            "agrees with production on 70.0% of 1000 recent queries, below the floor 80%"]),
    ],
)
def test_limits_name_each_broken_rule(changes: dict, expected: list[str]) -> None:
    assert limits(report(**changes), ShadowRules()) == expected


def test_a_small_replay_is_not_judged_and_says_so() -> None:
    small = report(rows=120, agreement=0.2, candidate_estimate=0.5)
    rules = ShadowRules(min_rows=500)
    assert limits(small, rules) == []
    assert not_judged(small, rules) == "shadow replay on 120 queries, fewer than 500: limits not judged"
    assert not_judged(report(agreement=0.2), rules) is None
    assert len(limits(report(rows=500, agreement=0.2), rules)) == 1


def test_tags_are_flat_short_strings_and_the_dict_is_json() -> None:
    shifts = tuple(LabelShift(f"label_with_a_rather_long_name_{i}", 10, 30 - i, 20 - i, 0) for i in range(10))
    rep = report(shifts=shifts, labels_changed=14)
    tags = rep.as_tags()
    assert all(k.startswith("shadow_") and isinstance(v, str) for k, v in tags.items())
    assert tags["shadow_rows"] == "1000" and tags["shadow_agreement"] == "0.9000"
    assert tags["shadow_uncertain_change"] == "+0.0200" and tags["shadow_estimate_change"] == "-0.0100"
    assert tags["shadow_top_shifts"].startswith("label_with_a_rather_long_name_0 +20 (+20/-0), ")
    assert len(tags["shadow_top_shifts"]) <= 250 and tags["shadow_labels_changed"] == "14"
    data = json.loads(json.dumps(rep.as_dict()))
    assert data["shifts"][0]["net"] == 20 and data["uncertain_change"] == pytest.approx(0.02)


def test_rule_defaults_are_the_settings_defaults() -> None:
    assert ShadowRules.from_settings(load_settings()) == ShadowRules()
