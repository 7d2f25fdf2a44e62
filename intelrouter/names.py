"""The names the whole loop shares: the abstention label, the registry aliases, label sources, option choices."""

from __future__ import annotations

from typing import Literal, get_args

UNCERTAIN = "UNCERTAIN"  # the router's answer below its threshold: never ground truth

PRODUCTION, STAGING = "production", "staging"  # registry aliases, and the traffic variants they serve
ALIASES = (PRODUCTION, STAGING)

# Where a ground-truth label came from, in rising precedence: a later source replaces an earlier one.
SOURCE_PRECEDENCE = {"import": 0, "auto-approved": 1, "feedback": 2, "label-studio": 3, "override": 4}
HUMAN_SOURCES = ("feedback", "override", "label-studio")  # labels that say whether an answer was right

ClassifierName = Literal["lr", "lr-lbfgs", "sgd", "svc", "ens", "mb"]
CLASSIFIERS: tuple[str, ...] = get_args(ClassifierName)
ThresholdPolicy = Literal["fixed", "coverage", "balanced", "accuracy"]
POLICIES: tuple[str, ...] = get_args(ThresholdPolicy)
