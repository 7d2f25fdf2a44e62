"""The traffic split: a sticky, pure choice between the production and the staging (canary) model."""

from __future__ import annotations

import hashlib

PRODUCTION, STAGING = "production", "staging"


def bucket(key: str) -> float:
    """A stable number in [0, 1) for a key: the same key always lands in the same place."""
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


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
