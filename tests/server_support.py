"""Real `intelrouter serve` processes for the fault tests: start one, load it from threads, kill it, block its
database's writes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from conftest import wait_for
from serving_fixtures import CLI

from devservers.ports import free_port
from intelrouter.config import Settings

TEXTS = ["what is my bank balance", "set an alarm for 7 am", "will it rain tomorrow", "transfer 20 dollars to anna",
         "set a timer for ten minutes", "is my flight on time", "book a hotel in paris", "translate hello to german"]


@dataclass
class Server:
    """One `intelrouter serve` process on a loopback port (its environment: the test's, plus `env`)."""

    log: Path
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True, timeout: float = 240) -> Server:
        """Start it and wait until /health answers (200 when `ready`: a production model is loaded)."""
        env = {**os.environ, **self.env}
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([*CLI, "serve", "--port", str(self.port), "--log-level", "info", *self.args],
                                         env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        want = (200,) if ready else (200, 503)
        ok = wait_for(lambda: self.proc.poll() is None and self.status() in want, timeout=timeout, interval=0.3)
        assert ok, f"intelrouter serve never became ready:\n{self.log.read_text()[-3000:]}"
        return self

    def status(self) -> int | None:
        """GET /health's status, None when nothing answers."""
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def signal(self, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        """Send a signal to its process group and wait for it to exit; returns the exit code."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def stop(self) -> int:
        """A graceful stop (SIGTERM: uvicorn finishes, the log writer flushes)."""
        return self.signal(signal.SIGTERM)


@dataclass
class Load:
    """Threads that POST /route through one base URL for as long as they run, keeping every answer."""

    base: str
    threads: int = 4
    users: int = 60
    answers: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        """Start the threads."""
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                user = f"user-{(i * self.threads + n) % self.users}"
                try:
                    res = http.post("/route", json={"text": TEXTS[i % len(TEXTS)], "user_id": user})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    if res.status_code == 200:
                        self.answers.append({**res.json(), "user": user, "at": time.monotonic(),
                                             "server": res.headers.get("x-served-by")})
                    else:
                        self.failures.append(f"{res.status_code}: {res.text[:200]}")

    def count(self) -> int:
        """Answers so far."""
        with self._lock:
            return len(self.answers)

    def stop(self) -> Load:
        """Stop the threads and wait for them."""
        self._stop.set()
        for t in self._workers:
            t.join(60)
        return self


@contextmanager
def writes_refused(settings: Settings) -> Iterator[None]:
    """While inside, the database takes no write to `queries` (SQLite: another writer holds the database lock;
    PostgreSQL: the table is locked): the writer's inserts wait, then fail or hang, as in an outage."""
    engine = sa.create_engine(settings.db_url)
    conn = engine.connect()
    try:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("LOCK TABLE queries IN EXCLUSIVE MODE")
        yield
    finally:
        conn.exec_driver_sql("ROLLBACK")
        conn.close()
        engine.dispose()
