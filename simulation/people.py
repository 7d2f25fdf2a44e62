"""The people and services around the simulated loop: the teacher (the fallback model), users who give feedback,
reviewers with a daily budget, and an in-memory stand-in for Label Studio.

The stand-in exists because 28 days of human review cannot happen in minutes: it offers the part of Label Studio's
API that `review_push`, `review_pull` and `review_project` use (projects, task import, task listing, annotations),
so the product's own push, pull and ledger code runs unchanged. The real Label Studio is tested in tests/test_review.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from intelrouter import clock
from intelrouter.config import Settings
from intelrouter.data import carve
from intelrouter.model import Router
from intelrouter.review_project import COMMENT_NAME, FROM_NAME, NONE_CHOICE, TO_NAME
from intelrouter.train import TrainOptions, fit_router, make_features

REVIEWER_ID, REVIEWER = 1, "reviewer@simulation"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="microseconds") + "Z"


class LabelStudioStandIn:
    """Label Studio's review API in memory (see the module docstring): one reviewer; open tasks served as Label
    Studio serves them (uncertainty sampling: lowest score of the project's model version first)."""

    def __init__(self) -> None:
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.dm_views: dict[int, list[dict[str, Any]]] = {}  # project id -> its Data Manager views
        self._next_task, self._next_annotation = 1, 1

    def __enter__(self) -> LabelStudioStandIn:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def close(self) -> None:
        """Nothing to close."""

    # --- projects -------------------------------------------------------------------------------------------
    def _project(self, project_id: int, title: str, label_config: str, description: str = "") -> dict[str, Any]:
        labels = re.findall(r'<Choice value="([^"]*)"', label_config)
        project = {"id": project_id, "title": title, "label_config": label_config, "description": description,
                   "parsed_label_config": {FROM_NAME: {"labels": labels}}}
        self.projects[project_id] = project
        return project

    def create_project(self, title: str, label_config: str, description: str = "") -> dict[str, Any]:
        """A new project."""
        return self._project(len(self.projects) + 1, title, label_config, description)

    def get_project(self, project_id: int) -> dict[str, Any]:
        """One project."""
        return self.projects[project_id]

    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project with this title, or None."""
        return next((p for p in self.projects.values() if p["title"] == title), None)

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        """Change project fields (a new label config re-reads its labels)."""
        project = self.projects[project_id]
        if "label_config" in fields:
            project = self._project(project_id, project["title"], fields["label_config"], project["description"])
        project.update({k: v for k, v in fields.items() if k != "label_config"})
        return project

    def users(self) -> dict[int, str]:
        """The one reviewer."""
        return {REVIEWER_ID: REVIEWER}

    # --- the Data Manager's views (review setup keeps one) ------------------------------------------------
    def columns(self, project_id: int) -> list[str]:
        """The task list's column ids."""
        return ["id", "data.text"]

    def views(self, project_id: int) -> list[dict[str, Any]]:
        """A project's views, leftmost first."""
        return list(self.dm_views.get(project_id, []))

    def create_view(self, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        """Add a view."""
        views = self.dm_views.setdefault(project_id, [])
        views.append({"id": len(views) + 1, "project": project_id, "data": data})
        return views[-1]

    def update_view(self, view_id: int, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        """Replace a view's data."""
        view = next(v for v in self.views(project_id) if v["id"] == view_id)
        view["data"] = data
        return view

    def order_views(self, project_id: int, view_ids: Sequence[int]) -> None:
        """Put the views in this order."""
        views = {v["id"]: v for v in self.views(project_id)}
        self.dm_views[project_id] = [views[i] for i in view_ids]

    # --- tasks ----------------------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Store tasks in import order; returns their ids."""
        ids = []
        for task in tasks:
            task_id, self._next_task = self._next_task, self._next_task + 1
            self.tasks[task_id] = {"id": task_id, "project": project_id, "data": dict(task["data"]),
                                   "predictions": task.get("predictions", []), "annotations": [],
                                   "updated_at": _iso(clock.now())}
            ids.append(task_id)
        project = self.projects[project_id]
        versions = [p.get("model_version") for t in tasks for p in t.get("predictions", [])]
        if not project.get("model_version") and versions:  # as Label Studio does: the last imported version
            project["model_version"] = versions[-1]
        return ids

    def iter_tasks(self, project_id: int, *, filters: Sequence[dict[str, Any]] = (), include: Sequence[str] = (),
                   page_size: int = 1000, after_id: int = 0) -> Iterator[list[dict[str, Any]]]:
        """Pages of a project's tasks in id order, after `after_id`."""
        tasks = [t for t in self.tasks.values() if t["project"] == project_id and t["id"] > after_id]
        for i in range(0, len(tasks), page_size):
            yield tasks[i:i + page_size]

    def annotated_tasks(self, project_id: int, *, since: datetime | None = None,
                        page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Pages of annotated tasks changed after `since`, oldest change first."""
        cutoff = _iso(since - timedelta(microseconds=1)) if since else ""
        tasks = sorted((t for t in self.tasks.values() if t["project"] == project_id and t["annotations"]
                        and t["updated_at"] > cutoff), key=lambda t: t["updated_at"])
        for i in range(0, len(tasks), page_size):
            yield tasks[i:i + page_size]

    def open_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Tasks nobody has answered yet, in the order Label Studio serves them: with uncertainty sampling, those with
        a prediction of the project's model version by its score (lowest first), the rest after (Label Studio would
        draw those at random); otherwise import order (sequential sampling)."""
        project = self.projects[project_id]
        tasks = [t for t in self.tasks.values() if t["project"] == project_id and not t["annotations"]]
        if project.get("sampling") != "Uncertainty sampling":
            return tasks
        version = project.get("model_version")

        def score(task: dict[str, Any]) -> float:
            scores = [p["score"] for p in task["predictions"] if p.get("model_version") == version]
            return min(scores) if scores else float("inf")

        return sorted(tasks, key=score)  # stable: import order among equals

    def annotate(self, task_id: int, label: str | None) -> None:
        """The reviewer answers a task: a label, or None for "None of these"."""
        now = _iso(clock.now())
        task = self.tasks[task_id]
        choice = label if label is not None else NONE_CHOICE
        result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [choice]}}]
        if label is None:
            result.append({"from_name": COMMENT_NAME, "to_name": TO_NAME, "type": "textarea",
                           "value": {"text": ["out of scope"]}})
        task["annotations"].append({"id": self._next_annotation, "result": result, "was_cancelled": False,
                                    "completed_by": REVIEWER_ID, "created_at": now, "updated_at": now})
        self._next_annotation += 1
        task["updated_at"] = now


class Reviewers:
    """Reviewers with a budget per shift: they take tasks in the product's order (or at random) and answer with the
    dataset's label, wrong with probability `error` (a random other label)."""

    def __init__(self, truth: dict[str, str], labels: list[str], error: float, order: str, random_state: int) -> None:
        self.truth, self.labels, self.error, self.order = truth, labels, error, order
        self.rng = np.random.default_rng(random_state)
        self.answered = 0

    def work(self, ls: LabelStudioStandIn, project_id: int, budget: int | None) -> int:
        """Answer up to `budget` open tasks (None: all of them); returns how many were answered."""
        tasks = ls.open_tasks(project_id)
        if self.order == "random":
            tasks = [tasks[i] for i in self.rng.permutation(len(tasks))]
        done = 0
        for task in tasks:
            if budget is not None and done >= budget:
                break
            truth = self.truth.get(str(task["data"].get("query_id")))
            if truth is None:
                continue
            label = truth
            if self.error and self.rng.random() < self.error:
                label = str(self.rng.choice([lab for lab in self.labels if lab != truth]))
            ls.annotate(task["id"], label)
            done += 1
        self.answered += done
        return done


class Teacher:
    """The trusted provider: a real model fitted on its own part of the data, answering when the router falls back."""

    def __init__(self, router: Router) -> None:
        self.router = router

    @classmethod
    def fit(cls, part: pd.DataFrame, settings: Settings, oos_label: str | None, classifier: str = "lr",
            random_state: int = 0) -> Teacher:
        """Fit on the teacher's part: in-scope rows train, a stratified 15 % and every out-of-scope row calibrate."""
        is_oos = (part["label"] == oos_label).to_numpy() if oos_label else np.zeros(len(part), dtype=bool)
        val_mask = carve(part, ~is_oos, 0.15, np.random.default_rng(random_state)) | is_oos
        options = TrainOptions(classifier=classifier)  # type: ignore[arg-type]
        train, val = part[~val_mask].reset_index(drop=True), part[val_mask].reset_index(drop=True)
        router, _ = fit_router(train, val, make_features(settings, options), options, settings)
        return cls(router)

    def answer(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """The teacher's label and calibrated confidence for each text."""
        return [(p.top_label, p.confidence) for p in self.router.predict(list(texts))]
