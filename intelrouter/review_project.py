"""The Label Studio review project: its labels, its labeling config, and the shared ground of push and pull.

Human review in Label Studio has three steps, each in its own module: set up the project (here), push what
needs review (`review_push`), pull the answers (`review_pull`); `review.sync` runs a pull, then a push.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from sqlalchemy import func, select

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import ConfigError, InsufficientDataError
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.names import PRODUCTION, UNCERTAIN
from intelrouter.review_screen import COMMENT_NAME as COMMENT_NAME  # the screen's names: re-exported for push, pull
from intelrouter.review_screen import FROM_NAME, VIEW_TITLE, view_data
from intelrouter.review_screen import ORDER_VERSION as ORDER_VERSION
from intelrouter.review_screen import QUICK_NAME as QUICK_NAME
from intelrouter.review_screen import TO_NAME as TO_NAME
from intelrouter.review_screen import guess as guess

PROJECT_TITLE = "IntelRouter review"
PROJECT_DESCRIPTION = (
    "Queries the router was unsure about. The model's guess is pre-selected among its top suggestions "
    "(hotkeys 1-3): Submit (Ctrl+Enter) to confirm, or pick another suggestion or a label from the full list; "
    "choose 'None of these / new label' (hotkey 0; say which in the comment) when no label fits."
)
# Label Studio serves the open task whose prediction of the project's model version has the lowest score first;
# every task carries one prediction of ORDER_VERSION scored by its place in the queue (review_push.order_score)
SAMPLING = "Uncertainty sampling"
CONFIG_TEMPLATE = Path(__file__).with_name("labeling_config.xml")
LABELS_MARKER = "<!-- LABELS -->"
NONE_CHOICE = "None of these / new label"
BATCH_SIZE = 1000  # tasks per import / per pulled page: ~1 s each on Label Studio's SQLite

# review_tasks.status
PENDING, PUSHED, COMPLETED, SKIPPED = "pending", "pushed", "completed", "skipped"


def _production_labels(settings: Settings) -> list[str]:
    """The production model's labels, or [] when no model carries @production."""
    from intelrouter.loading import load_alias  # imports MLflow and the model: only `setup` needs it

    loaded = load_alias(settings, PRODUCTION)
    return list(loaded[1].labels) if loaded else []


def label_set(settings: Settings) -> list[str]:
    """Labels reviewers choose from: the production model's, those in ml_data, and every label the model
    guessed for a query waiting for review (so each pre-annotation is a valid choice)."""
    labels = set(_production_labels(settings))
    q = store.queries
    with store.connect(settings) as conn:
        labels.update(conn.execute(select(store.ml_data.c.label).distinct()).scalars())
        guessed = func.coalesce(q.c.top_label, q.c.predicted_label)
        labels.update(conn.execute(select(guessed).where(q.c.review_status == store.NEEDS_REVIEW).distinct()).scalars())
    return sorted(label for label in labels if label and label not in (UNCERTAIN, NONE_CHOICE))


def labeling_config(labels: Iterable[str]) -> str:
    """The labeling config: the shipped template with one single-choice option per label."""
    template = CONFIG_TEMPLATE.read_text(encoding="utf-8")
    choices = sorted({label for label in labels if label and label != NONE_CHOICE})
    return template.replace(LABELS_MARKER, "\n    ".join(f"<Choice value={quoteattr(c)}/>" for c in choices))


def project_labels(project: dict[str, Any]) -> set[str]:
    """The labels a Label Studio project's config offers (without the "none of these" choice)."""
    control = (project.get("parsed_label_config") or {}).get(FROM_NAME) or {}
    return {label for label in control.get("labels", []) if label != NONE_CHOICE}


# --- settings and the client --------------------------------------------------------------------------


def project_id_of(settings: Settings, project_id: int | None) -> int:
    """The project to work in: the one given, else the configured one; none is a ConfigError saying what to do."""
    pid = project_id if project_id is not None else settings.label_studio_project_id
    if pid is None:
        raise ConfigError(
            "INTELROUTER_LABEL_STUDIO_PROJECT_ID is not set: run `intelrouter review setup` and set it to the "
            "id it prints, or pass --project-id"
        )
    return pid


@contextmanager
def session(settings: Settings, client: LabelStudioClient | None) -> Iterator[LabelStudioClient]:
    """The client given, or a new one on the configured server (closed at the end)."""
    if client is not None:
        yield client
        return
    with LabelStudioClient.from_settings(settings) as own:
        yield own


def setup_project(settings: Settings, *, title: str = PROJECT_TITLE, client: LabelStudioClient | None = None) -> int:
    """Create the review project (or update the configured one, or the one with this title), its sampling and its
    Data Manager view; returns its id. Safe to run again: nothing is created twice."""
    with session(settings, client) as ls:  # first: a missing URL or key fails before any slow work
        labels = set(label_set(settings))
        if not labels:
            raise InsufficientDataError(
                "no labels to review with: import ground truth into ml_data, train a model, or capture queries first"
            )
        if settings.label_studio_project_id is not None:
            project = ls.get_project(settings.label_studio_project_id)
        else:
            project = ls.find_project(title)
        if project is None:
            project = ls.create_project(title, labeling_config(labels), PROJECT_DESCRIPTION)
        else:
            ensure_labels(ls, project, labels)
        project_id = int(project["id"])
        if project.get("sampling") != SAMPLING:
            ls.update_project(project_id, sampling=SAMPLING)
        ensure_view(ls, project_id)
        return project_id


def ensure_view(ls: LabelStudioClient, project_id: int) -> int:
    """The review queue as the project's first Data Manager tab: found by title and updated, created only when
    missing (a reviewer's column widths and filters on it stay); returns its id."""
    views = ls.views(project_id)
    ours = next((v for v in views if (v.get("data") or {}).get("title") == VIEW_TITLE), None)
    data = view_data(ls.columns(project_id), ours.get("data") if ours else None)
    if ours is None:
        ours = ls.create_view(project_id, data)
    elif data != ours.get("data"):
        ls.update_view(int(ours["id"]), project_id, data)
    ids = [int(ours["id"])] + [int(v["id"]) for v in views if v["id"] != ours["id"]]
    if [int(v["id"]) for v in views] != ids:
        ls.order_views(project_id, ids)
    return int(ours["id"])


def ensure_labels(ls: LabelStudioClient, project: dict[str, Any], needed: set[str]) -> None:
    """Add missing labels to the project's config; labels already there stay (answers may use them)."""
    have = project_labels(project)
    config = labeling_config(have | needed)
    if config != project.get("label_config"):
        ls.update_project(int(project["id"]), label_config=config)

