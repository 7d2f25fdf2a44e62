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

PROJECT_TITLE = "IntelRouter review"
PROJECT_DESCRIPTION = (
    "Queries the router was unsure about. Confirm the pre-selected label or pick the right one; "
    "choose 'None of these / new label' (and say which in the comment) when no label fits."
)
CONFIG_TEMPLATE = Path(__file__).with_name("labeling_config.xml")
LABELS_MARKER = "<!-- LABELS -->"
NONE_CHOICE = "None of these / new label"
FROM_NAME, TO_NAME, COMMENT_NAME = "label", "text", "comment"
BATCH_SIZE = 1000  # tasks per import / per pulled page: ~1 s each on Label Studio's SQLite

# review_tasks.status
PENDING, PUSHED, COMPLETED, SKIPPED = "pending", "pushed", "completed", "skipped"
# Label Studio serves the tasks in Data Manager order (push order by default): the push sends the most useful first
SEQUENTIAL = "Sequential sampling"


def guess(row: Any) -> str | None:
    """The model's guess for a query row (its top label), or None when it had none."""
    label = row.top_label or row.predicted_label
    return None if not label or label == UNCERTAIN else label


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
    """Create the review project (or update the configured one, or the one with this title); returns its id."""
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
        if project.get("sampling") != SEQUENTIAL:
            ls.update_project(int(project["id"]), sampling=SEQUENTIAL)
        return int(project["id"])


def ensure_labels(ls: LabelStudioClient, project: dict[str, Any], needed: set[str]) -> None:
    """Add missing labels to the project's config; labels already there stay (answers may use them)."""
    have = project_labels(project)
    config = labeling_config(have | needed)
    if config != project.get("label_config"):
        ls.update_project(int(project["id"]), label_config=config)

