"""The canary check: every branch of the pure decision, then the real registry moved by `check`."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from intelrouter import canary, lifecycle, registry, store
from intelrouter.canary import CanaryState, Estimate, VariantStats, decide
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.groundtruth import record_feedback

RULES = {"steps": [0.1, 0.5, 1.0], "window_hours": 48, "min_feedback": 30, "tolerance": 0.02}


def _vs(version: str, correct: int, labelled: int) -> VariantStats:
    return VariantStats(version, labelled=labelled, correct=correct)


def state(staging: tuple | None, production: tuple | None, share: float = 0.1, hours: float = 50) -> CanaryState:
    """(correct, labelled) pairs for each variant."""
    return CanaryState(_vs("1", *production) if production else None, _vs("2", *staging) if staging else None,
                       share, hours)


def test_no_canary_means_nothing_to_do() -> None:
    assert decide(state(None, (90, 100)), **RULES).action == "none"


def test_canary_without_production_is_promoted() -> None:
    assert decide(state((10, 20), None), **RULES).action == "promote"


def test_waits_for_the_window() -> None:
    d = decide(state((95, 100), (80, 100), hours=47.9), **RULES)
    assert d.action == "wait" and "47.9 h of 48 h" in d.reason


def test_waits_for_feedback_on_each_variant() -> None:
    d = decide(state((29, 29), (90, 100)), **RULES)
    assert d.action == "wait" and "staging has 29" in d.reason
    d = decide(state((90, 100), (5, 10)), **RULES)
    assert d.action == "wait" and "production has 10" in d.reason


def test_clearly_worse_canary_is_rolled_back() -> None:
    d = decide(state((60, 100), (90, 100)), **RULES)
    assert d.action == "rollback" and d.difference == pytest.approx(-0.30)


def test_a_small_sample_that_looks_worse_waits_instead_of_rejecting() -> None:
    # 26/30 vs 90/100: 4.7 points worse, beyond the 2-point tolerance, but well inside the noise
    d = decide(state((26, 30), (90, 100)), **RULES)
    assert d.action == "wait" and "not yet certain" in d.reason
    # the same gap on 3000 labels each is certain
    assert decide(state((2500, 3000), (2700, 3000)), **RULES).action == "rollback"


def test_within_tolerance_raises_the_share_a_step_then_promotes() -> None:
    as_good = ((88, 100), (89, 100))
    step = decide(state(*as_good, share=0.1), **RULES)
    assert (step.action, step.share, step.difference) == ("raise", 0.5, pytest.approx(-0.01))
    assert decide(state(*as_good, share=0.5), **RULES).share == 1.0
    final = decide(state(*as_good, share=1.0), **RULES)
    assert final.action == "promote" and "last step" in final.reason


def test_steps_are_configurable() -> None:
    rules = {**RULES, "steps": [0.25]}
    assert decide(state((90, 100), (90, 100), share=0.1), **rules).share == 0.25
    assert decide(state((90, 100), (90, 100), share=0.25), **rules).action == "promote"


def estimated(staging: tuple[float, int], production: tuple[float, int], **kwargs: object) -> CanaryState:
    """A canary without enough labels yet (5 each, 1 h into a 48 h window) and (accuracy, queries) estimates."""
    base = state((5, 5), (5, 5), hours=1.0, **kwargs)  # type: ignore[arg-type]
    return CanaryState(base.production, base.staging, base.share, base.hours_at_share,
                       Estimate(production[1], production[0]), Estimate(staging[1], staging[0]))


def test_a_canary_clearly_worse_on_estimated_accuracy_is_stopped_before_window_and_labels() -> None:
    d = decide(estimated((0.70, 400), (0.92, 4000)), **RULES, early_stop_margin=0.05)
    assert (d.action, d.basis) == ("rollback", "estimate")
    assert d.difference == pytest.approx(-0.22) and "stopped early, before the labels" in d.reason
    assert "estimated accuracy of the canary 70.0% on 400 queries" in d.reason
    # without the margin setting the same state waits for its window, as before
    assert decide(estimated((0.70, 400), (0.92, 4000)), **RULES).action == "wait"


def test_the_early_stop_needs_evidence_and_a_clear_gap() -> None:
    rules = {**RULES, "early_stop_margin": 0.05}
    assert decide(estimated((0.70, 15), (0.92, 150)), **rules).action == "wait"  # too few queries to be sure
    assert decide(estimated((0.89, 4000), (0.92, 40000)), **rules).action == "wait"  # certain, but within the margin
    assert decide(estimated((0.70, 0), (0.92, 4000)), **rules).action == "wait"  # nothing answered yet
    assert decide(state((5, 5), (5, 5), hours=1.0), **rules).action == "wait"  # no estimates read


def test_a_better_estimate_never_promotes_without_labels() -> None:
    rules = {**RULES, "early_stop_margin": 0.05}
    d = decide(estimated((0.99, 4000), (0.80, 40000)), **rules)
    assert d.action == "wait" and d.basis == "labels"  # the window and the labels still decide promotion
    labelled = CanaryState(_vs("1", 90, 100), _vs("2", 90, 100), 1.0, 50, Estimate(40000, 0.80), Estimate(4000, 0.99))
    assert decide(labelled, **rules).action == "promote"


# --- against a real MLflow registry (SQLite tracking store) and the real store --------------------------------


def _register(settings: Settings, n: int) -> list[str]:
    """Register n versions of the model (no artifacts: the canary only moves aliases and tags)."""
    client = registry.get_client(settings)
    client.create_registered_model(settings.model_name)
    source = settings.data_dir / "model"
    source.mkdir(parents=True, exist_ok=True)
    return [client.create_model_version(settings.model_name, source=str(source)).version for _ in range(n)]


def _traffic(settings: Settings, version: str, variant: str, correct: int, wrong: int, tag: str,
             hours_ago: float = 1.0, confidence: float = 0.9, unlabelled: int = 0) -> None:
    """Queries answered by `version` as `variant`, with feedback: `correct` right answers, `wrong` wrong ones; then
    `unlabelled` more nobody labelled."""
    when = store.utcnow() - timedelta(hours=hours_ago)
    rows = [{"id": f"{tag}-{i}", "text": f"{tag} query {i}", "predicted_label": "easy", "top_label": "easy",
             "confidence": confidence, "model_version": version, "variant": variant, "created_at": when}
            for i in range(correct + wrong + unlabelled)]
    log_queries(settings, rows)
    for i in range(correct + wrong):
        record_feedback(settings, f"{tag}-{i}", "easy" if i < correct else "hard")


@pytest.fixture
def canary_settings(settings: Settings) -> Settings:
    """Settings with a short canary: 1 h window, 10 labels per variant."""
    return load_settings(canary_window_hours=1, canary_min_feedback=10)


def test_check_steps_up_then_promotes_and_rollback_undoes_it(canary_settings: Settings) -> None:
    s = canary_settings
    v1, v2 = _register(s, 2)
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    assert registry.canary_share(s) == 0.1

    assert canary.check(s).decision["action"] == "wait"  # no traffic yet: the window has not started
    _traffic(s, v1, "production", 5, 0, "before", hours_ago=3)  # before the canary: not compared
    _traffic(s, v2, "staging", 18, 2, "s", hours_ago=2)
    _traffic(s, v1, "production", 18, 2, "p", hours_ago=1.5)

    first = canary.check(s)
    assert first.decision["action"] == "raise" and first.applied
    assert registry.canary_share(s) == 0.5
    logged = json.loads(Path(first.path).read_text())
    assert logged["decision"]["share"] == 0.5 and logged["state"]["staging"]["labelled"] == 20

    # the share was just raised: the window starts again
    assert canary.check(s).decision["action"] == "wait"
    later = store.utcnow() + timedelta(hours=2)
    assert canary.check(s, now=later).decision["action"] == "raise"
    assert registry.canary_share(s) == 1.0
    done = canary.check(s, now=later + timedelta(hours=2))
    assert done.decision["action"] == "promote"
    assert registry.alias_version(s, "production").version == v2
    assert registry.alias_version(s, "staging") is None
    assert registry.get_version(s, v1).tags["lifecycle"] == "archived"
    assert canary.check(s).decision["action"] == "none"

    lifecycle.rollback(s)  # `intelrouter rollback` undoes the promotion in one step
    assert registry.alias_version(s, "production").version == v1


def test_check_rolls_back_a_worse_canary(canary_settings: Settings) -> None:
    s = canary_settings
    v1, v2 = _register(s, 2)
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    _traffic(s, v2, "staging", 30, 30, "s", hours_ago=3)
    _traffic(s, v1, "production", 57, 3, "p", hours_ago=2)
    result = canary.check(s)
    assert result.decision["action"] == "rollback" and result.applied
    assert registry.alias_version(s, "staging") is None
    assert registry.alias_version(s, "production").version == v1
    tags = registry.get_version(s, v2).tags
    assert tags["lifecycle"] == "rejected" and "canary rolled back" in tags["rejected_reason"]


def test_dry_run_changes_nothing(canary_settings: Settings) -> None:
    s = canary_settings
    v1, v2 = _register(s, 2)
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    _traffic(s, v2, "staging", 15, 0, "s", hours_ago=2)
    _traffic(s, v1, "production", 15, 0, "p", hours_ago=1.5)
    result = canary.check(s, dry_run=True)
    assert result.decision["action"] == "raise" and not result.applied
    assert registry.canary_share(s) == 0.1


def test_cli_canary_check_prints_the_decision(canary_settings: Settings) -> None:
    s = canary_settings
    v1, v2 = _register(s, 2)
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    env = {**os.environ, "INTELROUTER_CANARY_WINDOW_HOURS": "48"}
    result = subprocess.run([sys.executable, "-m", "cli", "canary", "check"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wait: the canary has run 0.0 h of 48 h")
    bad = subprocess.run([sys.executable, "-m", "cli", "canary", "check"], capture_output=True,
                         text=True, env={**env, "INTELROUTER_MLFLOW_TRACKING_URI": "http://127.0.0.1:9/"},
                         timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: model registry at http://127.0.0.1:9/")
    assert "Traceback" not in bad.stderr


def test_a_canary_moved_by_hand_during_the_check_is_left_alone(canary_settings: Settings) -> None:
    s = canary_settings
    v1, v2, v3 = _register(s, 3)
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    _traffic(s, v2, "staging", 15, 0, "s", hours_ago=2)
    _traffic(s, v1, "production", 15, 0, "p", hours_ago=1.5)
    state = canary.read_state(s)
    decision = canary.decide_for(s, state)
    assert decision.action == "raise"
    lifecycle.promote(s, v3, "staging")  # an operator replaces the canary meanwhile
    assert canary.apply(s, state, decision) is False
    assert registry.alias_version(s, "staging").version == v3 and registry.canary_share(s) == 0.1


class Killed(BaseException):
    """The process died here: raised past every `except Exception`, as SIGKILL would stop it."""


def test_a_promotion_killed_between_its_alias_moves_is_finished_by_the_next_check(
    canary_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    s = canary_settings
    v1, v2 = _register(s, 2)
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    lifecycle.set_canary_share(s, 1.0)  # the last step: the next good check promotes
    _traffic(s, v2, "staging", 18, 2, "s", hours_ago=2)
    _traffic(s, v1, "production", 18, 2, "p", hours_ago=1.5)

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed("died after @production moved, before @staging was cleared")

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "delete_registered_model_alias", killed)
        with pytest.raises(Killed):
            canary.check(s)
    assert registry.alias_version(s, "production").version == registry.alias_version(s, "staging").version == v2

    after = canary.check(s)  # the next hourly check: no canary to judge, and the promotion is finished
    assert after.decision["action"] == "none"
    assert registry.alias_version(s, "production").version == v2 and registry.alias_version(s, "staging") is None
    assert registry.get_version(s, v1).tags["lifecycle"] == "archived"
    assert registry.production_history(s) == [str(v1), str(v2)]
    assert registry.PENDING_TAG not in registry.get_client(s).get_registered_model(s.model_name).tags


def test_a_check_while_a_training_holds_the_lock_changes_nothing(canary_settings: Settings) -> None:
    from training_support import another_training

    s = load_settings(canary_window_hours=1, canary_min_feedback=10, training_lock_wait_seconds=0)
    v1, v2 = _register(s, 2)
    lifecycle.promote(s, v1, "production")
    lifecycle.promote(s, v2, "staging")
    _traffic(s, v2, "staging", 15, 0, "s", hours_ago=2)
    _traffic(s, v1, "production", 15, 0, "p", hours_ago=1.5)
    with another_training(s, hold_seconds=60):
        result = canary.check(s)
        assert result.decision["action"] == "raise" and not result.applied
        assert registry.canary_share(s) == 0.1
    assert canary.check(s).applied and registry.canary_share(s) == 0.5


def test_check_stops_a_canary_early_on_estimated_accuracy_and_logs_its_shadow_replay(settings: Settings) -> None:
    s = settings  # the production window (48 h) and label minimum (30): neither is reached here
    v1, v2 = _register(s, 2)
    lifecycle.promote(s, v1, "production")
    registry.tag_version(s, v2, {"shadow": "passed", "shadow_agreement": "0.9500", "shadow_rows": "1200",
                                 "semver": "1.1.0"})
    lifecycle.promote(s, v2, "staging")
    _traffic(s, v1, "production", 0, 0, "before", hours_ago=5, confidence=0.1, unlabelled=50)  # before the canary
    _traffic(s, v2, "staging", 2, 0, "s", hours_ago=2, confidence=0.55, unlabelled=400)
    _traffic(s, v1, "production", 3, 0, "p", hours_ago=1.5, confidence=0.93, unlabelled=3000)
    state = canary.read_state(s)
    assert state.staging_estimate == Estimate(402, pytest.approx(0.55))
    assert state.production_estimate == Estimate(3003, pytest.approx(0.93))  # counted from the canary's start only
    result = canary.check(s)
    assert result.decision["action"] == "rollback" and result.decision["basis"] == "estimate" and result.applied
    assert registry.alias_version(s, "staging") is None
    assert "estimated accuracy" in registry.get_version(s, v2).tags["rejected_reason"]
    logged = json.loads(Path(result.path).read_text())
    assert logged["shadow"] == {"shadow": "passed", "shadow_agreement": "0.9500", "shadow_rows": "1200"}
    assert logged["state"]["staging_estimate"] == {"queries": 402, "accuracy": pytest.approx(0.55)}
    assert logged["settings"]["canary_early_stop_margin"] == s.canary_early_stop_margin
