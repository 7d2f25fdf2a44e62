"""When to retrain: the weekly rule (seed 004) and the forced periodic run (seed 000)."""

from __future__ import annotations


def should_train(waiting: int, trigger: int, force: bool) -> tuple[bool, str]:
    """Train when `trigger` approved samples are unused, or when forced (the 30-day run); (decision, reason)."""
    if force:
        return True, f"scheduled retrain regardless of new data ({waiting} samples waiting)"
    if waiting >= trigger:
        return True, f"{waiting} approved samples are unused (trigger {trigger})"
    return False, f"skipped: {waiting} approved samples are unused, the weekly trigger is {trigger}"
