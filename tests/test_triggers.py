"""When to retrain: the weekly rule and the forced periodic run."""

from __future__ import annotations

from intelrouter.triggers import should_train


def test_weekly_rule_trains_at_the_trigger_and_always_when_forced() -> None:
    assert should_train(499, 500, False)[0] is False
    assert should_train(500, 500, False)[0] is True
    go, reason = should_train(3, 500, True)
    assert go and "regardless" in reason
