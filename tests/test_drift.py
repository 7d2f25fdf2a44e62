"""Drift: PSI of predicted labels and confidences on shifted and unshifted traffic, unseen words, the alerts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import shadow_support as support

from intelrouter.drift import (
    DriftReport,
    DriftTest,
    confidence_drift,
    drift_report,
    from_reference,
    known_words,
    label_drift,
    psi,
    reference,
    unseen_word_share,
    vocabulary_of,
)
from intelrouter.model import UNCERTAIN
from intelrouter.shadow import Answers, answers


def train_counts() -> dict[str, int]:
    """Label counts of the rows @production was trained on (the test traffic's intents)."""
    return dict(Counter(support.clinc()["train"]["label"]))


def production_on(split: str) -> Answers:
    """@production's answers on a split's in-scope rows."""
    return answers(support.production(), support.inscope(split)["text"].tolist())


def test_psi_of_identical_distributions_is_zero_and_of_a_known_shift_its_formula() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0
    assert psi([10, 20, 30], [100, 200, 300]) == pytest.approx(0.0, abs=1e-12)  # shares, not counts
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5)
    assert psi([50, 50], [80, 20]) == pytest.approx(0.3 * np.log(1.6) + 0.3 * np.log(2.5))
    assert psi([50, 50], [20, 80]) == psi([50, 50], [80, 20])
    empty = psi([50, 50, 0], [40, 40, 20])  # an empty bin counts as share eps: finite, and large
    assert np.isfinite(empty) and empty > 0.2
    assert psi([50, 50, 0], [40, 40, 20], eps=1e-2) < empty
    for bad in (([1, 2], [1, 2, 3]), ([0, 0], [1, 1]), ([1, -1], [1, 1])):
        with pytest.raises(ValueError):
            psi(*bad)


def test_label_drift_on_unshifted_and_shifted_traffic() -> None:
    counts, recent = train_counts(), production_on("test").labels
    same = label_drift(counts, recent)
    assert same.statistic < 0.1 and not same.drifted
    assert same.bins == len(counts) + 1 and same.n_recent == len(recent) and same.n_reference == sum(counts.values())
    third = sorted(counts)[: len(counts) // 3]
    shifted = label_drift(counts, recent[np.isin(recent, third)])  # traffic from a third of the labels only
    assert shifted.statistic > 1.0 and shifted.drifted and shifted.p_value < 1e-6
    assert "drift" in shifted.message and f"threshold {shifted.threshold:g}" in shifted.message


def test_a_small_unshifted_sample_is_above_the_threshold_but_not_drift() -> None:
    # 40 queries over 31 bins leave most bins empty: PSI is large from sampling alone, the chi-square test knows
    counts, recent = train_counts(), production_on("test").labels
    sample = np.random.default_rng(0).choice(recent, 40, replace=False)
    small = label_drift(counts, sample)
    assert small.statistic > small.threshold and not small.drifted and small.p_value > 0.01
    assert "within sampling noise" in small.message


def test_uncertain_is_a_bin_of_its_own() -> None:
    counts = {"a": 500, "b": 500}
    recent = ["a"] * 40 + ["b"] * 40 + [UNCERTAIN] * 20
    neutral = label_drift(counts, recent)  # without an expected rate: the answered mix only, which is unchanged
    assert neutral.statistic == pytest.approx(0.0, abs=1e-12) and neutral.bins == 3
    expected = label_drift(counts, recent, expected_uncertain_rate=0.2)
    assert expected.statistic == pytest.approx(0.0, abs=1e-12)
    rare = label_drift(counts, recent, expected_uncertain_rate=0.01)  # 20 % fallbacks where 1 % was expected
    assert rare.drifted


def test_confidence_drift_on_shifted_and_unshifted_confidences() -> None:
    reference = production_on("val").confidences  # held-out rows, as training would store them
    same = confidence_drift(reference, production_on("test").confidences)
    assert same.statistic < 0.1 and not same.drifted and same.bins == 10
    test = support.clinc()["test"]
    foreign = answers(support.production(), test.loc[test["label"] == "oos", "text"].tolist()).confidences
    shifted = confidence_drift(reference, foreign)  # out-of-scope traffic: far lower confidences
    assert shifted.statistic > 1.0 and shifted.drifted
    ties = confidence_drift([0.99] * 50 + [0.5] * 50, [0.99] * 100)  # tied quantiles merge into fewer bins
    assert ties.bins == 2 and ties.drifted


def test_unseen_word_share_on_in_domain_and_foreign_texts() -> None:
    vocabulary = vocabulary_of(support.clinc()["train"]["text"])
    in_domain = unseen_word_share(vocabulary, support.inscope("test")["text"])
    foreign = unseen_word_share(vocabulary, ["¿Dónde está la estación de tren más cercana?",
                                             "def quicksort(xs): return sorted(xs)",
                                             "Wie spät ist es in Tokio?"])
    assert in_domain < 0.1 < 0.5 < foreign
    # the features' normaliser and splitter: case, width and punctuation do not make a word new
    assert unseen_word_share({"hello", "world"}, ["HELLO, Ｗｏｒｌｄ!"]) == 0.0
    assert unseen_word_share(lambda w: w == "hello", ["hello world", "hello"]) == pytest.approx(1 / 3)
    assert unseen_word_share(vocabulary, []) == 0.0


def test_drift_report_bundles_the_checks_and_their_alerts() -> None:
    router = support.production()
    vocabulary = vocabulary_of(support.clinc()["train"]["text"])
    reference = production_on("val").confidences
    test = support.clinc()["test"]
    texts = test.loc[test["label"] == "oos", "text"].tolist()  # a window of out-of-scope traffic only
    seen = answers(router, texts)
    report = drift_report(train_counts(), reference, vocabulary, texts, seen.labels, seen.confidences)
    assert isinstance(report, DriftReport) and report.n_recent == len(texts)
    assert isinstance(report.labels, DriftTest) and report.labels.drifted and report.confidences.drifted
    assert report.unseen_share > report.unseen_ceiling
    alerts = report.alerts(min_queries=20)
    assert [a["kind"] for a in alerts] == ["label_drift", "confidence_drift", "unseen_words"]
    assert all(set(a) == {"kind", "message", "value", "limit"} for a in alerts)
    assert alerts[0]["value"] == report.labels.statistic and alerts[0]["limit"] == 0.2
    assert report.alerts(min_queries=len(texts) + 1) == []
    data = json.loads(json.dumps(report.as_dict()))
    assert data["labels"]["message"] == report.labels.message
    held_out = unseen_word_share(vocabulary, support.inscope("val")["text"])  # what training stores
    calm = drift_report(train_counts(), reference, vocabulary, support.inscope("test")["text"].tolist(),
                        production_on("test").labels, production_on("test").confidences, unseen_reference=held_out)
    assert calm.alerts() == [] and abs(calm.unseen_rise) < 0.02
    # the ceiling is a rise over the held-out share: the same traffic alerts against a model whose held-out rows
    # had no unseen words at all, with the numbers in the message
    strict = drift_report(train_counts(), reference, vocabulary, support.inscope("test")["text"].tolist(),
                          production_on("test").labels, production_on("test").confidences, unseen_ceiling=0.01)
    (alert,) = strict.alerts()
    assert alert["kind"] == "unseen_words" and alert["limit"] == 0.01
    assert "points above the 0.0% of its held-out rows (ceiling +1.0 points)" in alert["message"]


def test_the_reference_stored_with_a_model_gives_the_same_verdicts() -> None:
    router = support.production()
    val = support.clinc()["val"]
    held_out = answers(router, val["text"].tolist())
    ref = reference(router, support.clinc()["train"]["label"], val["text"].tolist(), held_out.confidences, keep=200)
    data = json.loads(json.dumps(ref))  # plain JSON, kept with the model
    assert data["label_counts"] == train_counts() and data["held_out_rows"] == len(val)
    assert len(data["confidences"]) == 200 and data["confidences"] == sorted(data["confidences"])
    assert data["confidences"][0] == pytest.approx(held_out.confidences.min(), abs=1e-4)
    assert data["confidences"][-1] == pytest.approx(held_out.confidences.max(), abs=1e-4)
    known = known_words(router)
    assert known("weather") is not None and data["unseen_share"] == pytest.approx(
        unseen_word_share(known, val["text"]), abs=1e-4)
    # the model's own vocabulary: stems it has a word feature for; a made-up word is not one
    assert not known("zzyzxqv") and known(support.inscope("train")["text"][0].split()[0].lower())
    calm = from_reference(data, router, support.inscope("test")["text"].tolist(), production_on("test").labels,
                          production_on("test").confidences)
    assert calm.alerts() == [] and calm.unseen_reference == data["unseen_share"]
    test = support.clinc()["test"]
    oos = test.loc[test["label"] == "oos", "text"].tolist()
    seen = answers(router, oos)
    shifted = from_reference(data, router, oos, seen.labels, seen.confidences)
    assert {a["kind"] for a in shifted.alerts()} == {"label_drift", "confidence_drift", "unseen_words"}
