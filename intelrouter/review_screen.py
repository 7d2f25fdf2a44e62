"""The reviewer's screen: what a Label Studio task shows on top, and the task list's columns.

Each task carries the model's top suggestions (from the registry version that answered the query), a one-line
summary ("Model: oos 45 % · travel_suggestion 12 % · book_flight 8 %") and the fields the Data Manager view shows.
The suggestions are dynamic choices of their own control (`quick`, hotkeys 1-3) above the full list (`label`):
Label Studio appends dynamic choices after static ones, and a label offered twice in one control is selected
twice and refused on submit, so the quick picks cannot live inside the full list. The guess is pre-selected
among the quick picks; a pick in the full list hides them and is the answer (pull reads `label`, then `quick`).
"""

from __future__ import annotations

import html
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError, NotFoundError, first_line
from intelrouter.names import UNCERTAIN

log = logging.getLogger(__name__)

# names in the labeling config (labeling_config.xml)
FROM_NAME, QUICK_NAME, TO_NAME, COMMENT_NAME = "label", "quick", "text", "comment"
TOP_K = 3
HOTKEYS = ("1", "2", "3")  # the quick picks, in order; "None of these" is 0 in the full list
VIEW_TITLE = "Review queue"
# the model version of every task's one prediction, constant per project: Label Studio's uncertainty sampling orders
# the open tasks by the scores of the project's model version, and that score is the task's place in the queue
ORDER_VERSION = "review-order"
# Data Manager columns the view shows, per mode (the full table, and the list beside the labeling screen). All other
# columns are hidden, including task fields that appear only once tasks arrive (count comes with grouped tasks).
VIEW_COLUMNS = {
    "explore": ("id", "data.priority", "data.guess", "data.confidence", "data.count", "data.language", "data.text",
                "total_annotations", "cancelled_annotations", "annotators"),
    "labeling": ("id", "data.guess", "data.confidence", "data.count"),
}
LATER_COLUMNS = ("data.query_id", "data.suggestions", "data.suggestion_line", "data.users", "data.languages",
                 "data.text_key", "data.value", "data.model_version", "data.priority", "data.guess", "data.confidence",
                 "data.count", "data.language")
VIEW_ORDERING = ["tasks:predictions_score"]  # the review order: tier, then value (review_push.order_score)
VIEW_NUMBERS = ("data.priority", "data.confidence", "data.count")  # sorted as numbers, not as text
VIEW_WIDTHS = {"id": 60, "data.priority": 80, "data.guess": 130, "data.confidence": 90, "data.count": 70}

Suggestion = tuple[str, float]  # (label, confidence)


def guess(row: Any) -> str | None:
    """The model's guess for a query row (its top label), or None when it had none."""
    label = row.top_label or row.predicted_label
    return None if not label or label == UNCERTAIN else label


def percent(p: float) -> str:
    """A confidence as the screen shows it: "45 %", "<1 %"."""
    return "<1 %" if 0 < p < 0.005 else f"{p * 100:.0f} %"


def merge(guessed: str | None, confidence: float, ranked: Sequence[Suggestion], k: int = TOP_K) -> list[Suggestion]:
    """The top-k suggestions: the stored guess first with its stored confidence, then the model's next best."""
    out: list[Suggestion] = [(guessed, float(confidence))] if guessed else []
    out += [(label, p) for label, p in ranked if label != guessed and label != UNCERTAIN]
    return out[:k]


def summary_line(suggestions: Sequence[Suggestion], count: int = 1) -> str:
    """The line above the text: the model's guess and alternatives with confidences, and how many asked."""
    model = " · ".join(f"{label} {percent(p)}" for label, p in suggestions) if suggestions else "no guess"
    asked = f" — {count} queries share this text" if count > 1 else ""
    return f"Model: {model}{asked}"


def quick_picks(suggestions: Sequence[Suggestion]) -> list[dict[str, str]]:
    """The dynamic choices of the `quick` control: value = the label written to the answer, a hotkey each."""
    return [
        {"value": label, "html": f"{html.escape(label)} <small>{percent(p)}</small>", "hotkey": key,
         "hint": f"model confidence {percent(p)} (hotkey {key})"}
        for (label, p), key in zip(suggestions, HOTKEYS, strict=False)
    ]


def view_data(columns: Sequence[str], existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Data Manager view `review setup` keeps: our columns shown, every other one hidden, in review order.

    `columns` are the project's column ids ("id", "data.text", ...); what a reviewer set on an `existing` view
    (column widths, filters) stays.
    """
    known = list(dict.fromkeys([*columns, *LATER_COLUMNS]))
    hidden = {mode: [f"tasks:{c}" for c in known if c not in shown]
              for mode, shown in VIEW_COLUMNS.items()}
    data = dict(existing or {"filters": {"conjunction": "and", "items": []}})
    data.update({"title": VIEW_TITLE, "type": "list", "target": "tasks", "hiddenColumns": hidden,
                 "ordering": VIEW_ORDERING})
    numbers = {f"tasks:{c}": "Number" for c in VIEW_NUMBERS}
    data["columnsDisplayType"] = {**(data.get("columnsDisplayType") or {}), **numbers}
    data["columnsWidth"] = {**{f"tasks:{c}": w for c, w in VIEW_WIDTHS.items()}, **(data.get("columnsWidth") or {})}
    return data


class Screen:
    """Builds tasks for one push: each model version is loaded once, each batch's texts scored once per version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._routers: dict[str, Any] = {}  # model version -> Router, or None when it cannot be loaded
        self._ranked: dict[Any, list[Suggestion]] = {}
        self._registry_down = False

    def _router(self, version: str) -> Any:
        if version not in self._routers and not self._registry_down:
            from intelrouter.loading import load_version  # imports MLflow: only when a push needs a model

            try:
                self._routers[version] = load_version(self.settings, version)
            except IntelRouterError as exc:
                # an unknown version: try the others; an unreachable registry: try no other in this push
                self._registry_down = not isinstance(exc, NotFoundError)
                log.warning("model version %s cannot be loaded (%s): its tasks show the stored guess only",
                            version, first_line(exc))
                self._routers[version] = None
        return self._routers.get(version)

    def prepare(self, rows: Sequence[Any]) -> None:
        """Score a batch's texts with the model version that answered each (the router's own answers only)."""
        self._ranked = {}
        by_version: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            if row.model_version and row.provider == self.settings.router_provider:
                by_version[str(row.model_version)].append(row)
        for version, group in by_version.items():
            router = self._router(version)
            if router is None:
                continue
            try:
                proba = router.predict_proba([row.text for row in group])
            except IntelRouterError as exc:
                log.warning("model version %s cannot score texts (%s): its tasks show the stored guess only",
                            version, first_line(exc))
                self._routers[version] = None
                continue
            k = min(TOP_K + 1, proba.shape[1])  # one more: the guess may be among them and is listed apart
            top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
            labels = router.labels
            for row, idx, p in zip(group, top, proba, strict=True):
                self._ranked[row.id] = [(labels[i], float(p[i])) for i in idx]

    def task(self, row: Any, data: dict[str, Any], score: float, *, blind: bool = False) -> dict[str, Any]:
        """The Label Studio task: `data` plus the screen's fields, and its one prediction: of the constant version
        `ORDER_VERSION`, scored by the task's place in the review queue (`score`), with the guess pre-selected among
        the quick picks — none for a blind audit (the reviewer's answer must not be anchored on the guess it checks).
        """
        guessed = None if blind else guess(row)
        suggestions = merge(guess(row), row.confidence, self._ranked.get(row.id, []))
        count = int(data.get("count") or 1)
        fields = {
            "guess": guessed or "",
            "confidence": round(float(row.confidence), 4),
            "count": count,
            "suggestion_line": summary_line(suggestions, count),
            "suggestions": quick_picks(suggestions),
        }
        result = [] if guessed is None else [{"from_name": QUICK_NAME, "to_name": TO_NAME, "type": "choices",
                                              "value": {"choices": [guessed]}}]
        return {"data": {**data, **fields},
                "predictions": [{"model_version": ORDER_VERSION, "score": score, "result": result}]}
