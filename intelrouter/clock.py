"""The one clock every timestamp of the loop reads: real time, or a simulated time set by `intelrouter simulate`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_simulated: datetime | None = None


def now() -> datetime:
    """Now in UTC, naive (every timestamp in the store is naive UTC): the simulated time when one is set."""
    return _simulated if _simulated is not None else datetime.now(UTC).replace(tzinfo=None)


def set_time(when: datetime | None) -> None:
    """Set the simulated time (naive UTC), or go back to real time with None."""
    global _simulated
    _simulated = when


@contextmanager
def simulated(start: datetime) -> Iterator[None]:
    """Run a block on simulated time starting at `start`; real time again afterwards."""
    set_time(start)
    try:
        yield
    finally:
        set_time(None)
