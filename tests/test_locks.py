"""The lifecycle lock on the real database (SQLite file, or PostgreSQL in that pass): one holder at a time, a bounded
wait, one clear line, and a killed holder never blocks the next one."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from conftest import wait_for
from sqlalchemy import insert, text, update
from training_support import cli_env

from intelrouter import locks, store
from intelrouter.config import Settings
from intelrouter.errors import StoreError
from intelrouter.locks import LockBusyError, training_lock

HOLD_SCRIPT = """
from intelrouter.config import load_settings
from intelrouter.locks import training_lock
import sys, time
with training_lock(load_settings(), wait_seconds=0):
    print("held", flush=True)
    time.sleep(600)
"""


def _take_in_thread(settings: Settings, wait: float) -> tuple[threading.Thread, dict]:
    """Try to take the lock in another thread (another execution context); the outcome lands in the dict."""
    outcome: dict = {}

    def take() -> None:
        try:
            with training_lock(settings, wait_seconds=wait):
                outcome["held"] = True
        except LockBusyError as exc:
            outcome["busy"] = str(exc)

    thread = threading.Thread(target=take)
    thread.start()
    return thread, outcome


def test_a_second_taker_refuses_after_its_wait_with_one_line(settings: Settings) -> None:
    with training_lock(settings) as held:
        assert held.purpose == "training" and locks.holder(settings)["holder"] == held.holder
        thread, outcome = _take_in_thread(settings, wait=0.5)
        thread.join(30)
        assert "held" not in outcome
        message = outcome["busy"]
        assert re.fullmatch(
            r"another training is running since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC on "
            + re.escape(socket.gethostname()) + rf" \(pid {os.getpid()}\): try again later "
            r"\(waited 0.5 s, INTELROUTER_TRAINING_LOCK_WAIT_SECONDS\)", message), message
        # the command line: one line on stderr, exit 1, before any data is read
        done = subprocess.run([sys.executable, "-m", "cli", "train"], capture_output=True, text=True, timeout=120,
                              env=cli_env(INTELROUTER_TRAINING_LOCK_WAIT_SECONDS="0"))
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [f"error: {message.replace('0.5 s', '0 s')}"]
    assert locks.holder(settings) is None  # released, its row gone


def test_a_waiting_taker_gets_the_lock_when_the_holder_lets_go(settings: Settings) -> None:
    with training_lock(settings):
        thread, outcome = _take_in_thread(settings, wait=60)
        assert not wait_for(lambda: outcome, timeout=1.5)  # still waiting
    thread.join(60)
    assert outcome == {"held": True}


def test_the_lock_is_reentrant_in_one_context_only(settings: Settings) -> None:
    with training_lock(settings) as outer:
        with training_lock(settings, wait_seconds=0) as inner:  # a flow holding it calls the training job
            assert inner is outer
        thread, outcome = _take_in_thread(settings, wait=0)  # a new thread is another context: it must wait
        thread.join(30)
        assert "busy" in outcome
        assert locks.holder(settings)["holder"] == outer.holder  # the inner block did not release it


def test_a_killed_holder_does_not_block_the_next_training(settings: Settings) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT], stdout=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockBusyError, match=rf"\(pid {proc.pid}\)"):
            with training_lock(settings, wait_seconds=0):
                pass
        os.killpg(proc.pid, signal.SIGKILL)  # the process dies holding the lock
        proc.wait(30)
        # PostgreSQL drops the dead session's advisory lock; SQLite sees the holder's pid gone on this host
        with training_lock(settings, wait_seconds=30) as held:
            assert locks.holder(settings)["holder"] == held.holder
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_a_lost_lock_is_noticed_before_anything_moves(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_SECONDS", 0.1)
    with training_lock(settings) as held:
        held.check()
        with store.connect(settings) as conn:
            if conn.dialect.name == "postgresql":  # the holder's connection is cut by the server
                conn.execute(text("SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d "
                                  "ON d.oid = l.database WHERE l.locktype = 'advisory' "
                                  "AND d.datname = current_database() AND l.pid <> pg_backend_pid()"))
            else:  # another process took the row over (its heartbeat looked stale from there)
                conn.execute(update(store.locks).values(holder="someone-else"))
        assert wait_for(lambda: _check_raises(held), timeout=10)
        with pytest.raises(StoreError, match="lost the lifecycle lock .*: nothing more is moved"):
            held.check()


def _check_raises(held: locks.Held) -> bool:
    try:
        held.check()
    except StoreError:
        return True
    return False


@pytest.mark.embedded
def test_sqlite_lock_of_a_silent_holder_on_another_host_expires(settings: Settings) -> None:
    now = store.utcnow()
    row = {"name": locks.LOCK_NAME, "holder": "elsewhere-1", "purpose": "canary check", "host": "another-host",
           "pid": 1, "acquired_at": now, "heartbeat_at": now}
    with store.connect(settings) as conn:
        conn.execute(insert(store.locks).values(**row))
    with pytest.raises(LockBusyError, match=r"^a canary check is moving the aliases since .* on another-host"):
        with training_lock(settings, wait_seconds=0):
            pass
    stale = now - timedelta(seconds=locks.EXPIRE_SECONDS + 1)
    with store.connect(settings) as conn:
        conn.execute(update(store.locks).values(heartbeat_at=stale))
    with training_lock(settings, wait_seconds=0) as held:
        assert locks.holder(settings)["holder"] == held.holder
