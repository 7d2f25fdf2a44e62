"""Human review in one call: pull the answers given in Label Studio, then push what still waits for review.

Pull first: the answers it stores settle their queries before the push selects what still waits, so the push
never sends a question that was just answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from intelrouter.config import Settings
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.review_project import BATCH_SIZE, session
from intelrouter.review_pull import PullResult, pull
from intelrouter.review_push import PushResult, push


@dataclass
class SyncResult:
    """A pull followed by a push."""

    pull: PullResult
    push: PushResult


def sync(
    settings: Settings,
    limit: int | None = None,
    project_id: int | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    client: LabelStudioClient | None = None,
) -> SyncResult:
    """Pull the answers, then push what waits for review."""
    with session(settings, client) as ls:
        pulled = pull(settings, limit, project_id, batch_size=batch_size, client=ls)
        pushed = push(settings, limit, project_id, batch_size=batch_size, client=ls)
    return SyncResult(pull=pulled, push=pushed)
