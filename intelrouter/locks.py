"""One lifecycle change at a time: a lock in the database held by a training from reading `ml_data` to moving the
aliases, and by the canary check and the recovery while they move aliases.

PostgreSQL: a session-level advisory lock on a connection of its own, open for the whole block; the server drops it
the moment the holder's connection ends, so a killed process never blocks the next one. A row in `locks` names the
holder for the message a second taker gets.
SQLite: the row in `locks` is the lock. It is inserted to take the lock, its heartbeat is refreshed every
HEARTBEAT_SECONDS by a thread, and a later taker takes it over when the heartbeat is older than EXPIRE_SECONDS or
when the holder ran on this host and its process is gone (a killed training on the same machine frees it at once).
A second taker polls until its wait runs out (`INTELROUTER_TRAINING_LOCK_WAIT_SECONDS`), then fails with one line.
The lock is re-entrant within one execution context: a flow that holds it can call the training job, which takes it.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from intelrouter import store
from intelrouter.config import Settings
from intelrouter.errors import IntelRouterError, StoreError, first_line

LOCK_NAME = "lifecycle"  # one lock for every change of the registry's lifecycle and of ml_data's training marks
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 10.0
EXPIRE_SECONDS = 120.0  # SQLite: a holder silent this long (killed on another host, frozen) loses the lock


class LockBusyError(IntelRouterError):
    """Another training (or canary check) holds the lifecycle lock and did not let go within the wait."""


@dataclass
class Held:
    """A held lock: who holds it, and whether it is still held (a lost lock must stop a job before it moves)."""

    name: str
    holder: str
    purpose: str
    lost: str | None = None  # why the lock was lost, when it was
    _check: Any = field(default=None, repr=False)

    def check(self) -> None:
        """Raise StoreError when the lock is no longer held (its connection died, or its row was taken over)."""
        if self.lost is None and self._check is not None:
            self._check()
        if self.lost is not None:
            raise StoreError(f"the {self.purpose} lost the lifecycle lock ({self.lost}): nothing more is moved; "
                             "run it again")


_HELD: contextvars.ContextVar[dict[str, Held] | None] = contextvars.ContextVar("intelrouter_locks", default=None)


@contextmanager
def training_lock(settings: Settings, wait_seconds: float | None = None, purpose: str = "training"
                  ) -> Iterator[Held]:
    """Hold the lifecycle lock for the block; wait up to `wait_seconds` (default: the setting), else LockBusyError."""
    key = f"{settings.db_url}#{LOCK_NAME}"
    held = dict(_HELD.get() or {})
    if key in held:  # re-entered (a flow holding it calls the job): the outer block releases it
        yield held[key]
        return
    wait = settings.training_lock_wait_seconds if wait_seconds is None else wait_seconds
    engine = store.get_engine(settings)
    lock: _PostgresLock | _SqliteLock
    lock = _PostgresLock(settings, purpose) if engine.dialect.name == "postgresql" else _SqliteLock(settings, purpose)
    lock.acquire(wait)
    token = _HELD.set({**held, key: lock.held})
    try:
        yield lock.held
    finally:
        try:
            _HELD.reset(token)
        except ValueError:  # left in another context than it was entered in
            _HELD.set(held or None)
        lock.release()


def holder(settings: Settings) -> dict[str, Any] | None:
    """Who holds (or last held, on PostgreSQL after a crash) the lifecycle lock: purpose, host, pid, times."""
    t = store.locks
    with store.connect(settings) as conn:
        row = conn.execute(select(t).where(t.c.name == LOCK_NAME)).mappings().first()
    return dict(row) if row else None


def _busy_message(settings: Settings, wait: float) -> str:
    try:
        row = holder(settings)
    except StoreError:
        row = None
    who = "another training is running" if not row or row["purpose"] == "training" else \
        f"a {row['purpose']} is moving the aliases"
    since = (f" since {row['acquired_at']:%Y-%m-%d %H:%M:%S} UTC on {row['host']} (pid {row['pid']})"
             if row else "")
    return f"{who}{since}: try again later (waited {wait:g} s, INTELROUTER_TRAINING_LOCK_WAIT_SECONDS)"


def _wall_now() -> datetime:
    """Real time, naive UTC: a lock is about live processes, never the simulated clock of `intelrouter simulate`."""
    return datetime.now(UTC).replace(tzinfo=None)


def _me() -> dict[str, Any]:
    now = _wall_now()
    return {"holder": uuid.uuid4().hex, "host": socket.gethostname()[:255], "pid": os.getpid(),
            "acquired_at": now, "heartbeat_at": now}


def _unreachable(settings: Settings, exc: BaseException) -> StoreError:
    return StoreError(f"database {store.safe_url(settings)} is unreachable ({first_line(getattr(exc, 'orig', exc))}):"
                      " check INTELROUTER_DATABASE_URL and that the server runs")


class _PostgresLock:
    """pg_try_advisory_lock polled on a dedicated connection kept open until release."""

    def __init__(self, settings: Settings, purpose: str) -> None:
        self.settings, self.me = settings, {**_me(), "purpose": purpose}
        digest = hashlib.sha256(f"intelrouter:{LOCK_NAME}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.conn: Connection | None = None
        self.held = Held(LOCK_NAME, self.me["holder"], purpose, _check=self._alive)

    def acquire(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        try:
            self.conn = store.get_engine(self.settings).connect().execution_options(isolation_level="AUTOCOMMIT")
            while not self.conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
                if time.monotonic() >= deadline:
                    self._close()
                    raise LockBusyError(_busy_message(self.settings, wait))
                time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.01)))
            t = store.locks
            self.conn.execute(delete(t).where(t.c.name == LOCK_NAME))
            self.conn.execute(insert(t).values(name=LOCK_NAME, **self.me))
        except SQLAlchemyError as exc:
            self._close(invalidate=True)
            raise _unreachable(self.settings, exc) from None

    def _alive(self) -> None:
        try:
            assert self.conn is not None
            self.conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, AssertionError) as exc:
            self.held.lost = f"its database connection ended: {first_line(exc)}"

    def release(self) -> None:
        if self.conn is None:
            return
        try:
            t = store.locks
            self.conn.execute(delete(t).where(t.c.name == LOCK_NAME, t.c.holder == self.me["holder"]))
            self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._close()
        except SQLAlchemyError:  # the connection is gone, and the server dropped the lock with it
            self._close(invalidate=True)

    def _close(self, invalidate: bool = False) -> None:
        if self.conn is None:
            return
        try:
            if invalidate:
                self.conn.invalidate()  # never hand a connection that may hold the lock back to the pool
            self.conn.close()
        except SQLAlchemyError:
            pass
        self.conn = None


_INSERT_IF_FREE = text("INSERT INTO locks (name, holder, purpose, host, pid, acquired_at, heartbeat_at) "
                       "VALUES (:name, :holder, :purpose, :host, :pid, :acquired_at, :heartbeat_at) "
                       "ON CONFLICT (name) DO NOTHING")


class _SqliteLock:
    """The `locks` row as the lock, with a heartbeat thread and take-over of dead or silent holders."""

    def __init__(self, settings: Settings, purpose: str) -> None:
        self.settings, self.me = settings, {**_me(), "purpose": purpose}
        self.held = Held(LOCK_NAME, self.me["holder"], purpose)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while not self._try():
            if time.monotonic() >= deadline:
                raise LockBusyError(_busy_message(self.settings, wait))
            time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.01)))
        self._thread = threading.Thread(target=self._beat, name="intelrouter-lock-heartbeat", daemon=True)
        self._thread.start()

    def _try(self) -> bool:
        # every transaction here starts with its write: a read first would make SQLite refuse the upgrade
        # (SQLITE_BUSY) instead of waiting its busy timeout when two takers race
        t = store.locks
        for _ in range(3):  # free, or freed from an abandoned holder, the row is inserted on a later turn
            now = _wall_now()
            with store.connect(self.settings) as conn:
                if conn.execute(_INSERT_IF_FREE, {"name": LOCK_NAME, **self.me, "acquired_at": now,
                                                  "heartbeat_at": now}).rowcount == 1:
                    return True
            with store.connect(self.settings) as conn:
                row = conn.execute(select(t).where(t.c.name == LOCK_NAME)).mappings().first()
            if row is not None and not _abandoned(row, now):
                return False
            if row is not None:
                with store.connect(self.settings) as conn:  # take over only the holder judged abandoned
                    conn.execute(delete(t).where(t.c.name == LOCK_NAME, t.c.holder == row["holder"]))
        return False

    def _beat(self) -> None:
        t = store.locks
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                with store.connect(self.settings) as conn:
                    done = conn.execute(update(t).where(t.c.name == LOCK_NAME, t.c.holder == self.me["holder"])
                                        .values(heartbeat_at=_wall_now())).rowcount
            except StoreError:
                continue  # a busy or briefly unreachable file: the next beat tries again, expiry is far away
            if not done:
                self.held.lost = "another process took it over after its heartbeat stopped"
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        t = store.locks
        try:
            with store.connect(self.settings) as conn:
                conn.execute(delete(t).where(t.c.name == LOCK_NAME, t.c.holder == self.me["holder"]))
        except StoreError:
            pass  # the row expires on its own


def _abandoned(row: Any, now: datetime) -> bool:
    """A SQLite lock row whose holder stopped beating its heart, or whose process on this host is gone."""
    if now - row["heartbeat_at"] > timedelta(seconds=EXPIRE_SECONDS):
        return True
    if row["host"] != socket.gethostname()[:255]:
        return False
    try:
        os.kill(int(row["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
