"""The traffic split and the answer's route: a sticky, pure choice between the production and the canary model."""

from __future__ import annotations

from collections.abc import Mapping

from intelrouter.keys import bucket
from intelrouter.names import PRODUCTION, STAGING


def sticky_key(user_id: str | None, session_id: str | None, request_id: str) -> str:
    """What the split hashes: the user id, else the session id, else the request id."""
    if user_id:
        return f"user:{user_id}"
    if session_id:
        return f"session:{session_id}"
    return f"request:{request_id}"


def choose_variant(
    share: float, user_id: str | None, session_id: str | None, request_id: str, has_staging: bool = True
) -> str:
    """"staging" when the key's bucket falls below the canary share (and a staging model exists), else "production".

    A user inside a 10 % canary stays inside when the share grows: buckets do not move, only the bar.
    """
    if not has_staging or share <= 0:
        return PRODUCTION
    return STAGING if bucket(sticky_key(user_id, session_id, request_id)) < share else PRODUCTION


def route_target(label: str, uncertain: bool, routes: Mapping[str, str], fallback: str) -> str:
    """Where the caller sends the query: the fallback route when UNCERTAIN, else the label's route (or the label)."""
    return fallback if uncertain else routes.get(label, label)
