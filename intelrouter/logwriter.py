"""The background query-log writer: `queries` rows go to the database in batches, off the request path.

Write-ahead: `submit` appends the row to this process's journal (`intelrouter.journal`, one write(2)) before it
returns, so once an answer has left the server its row survives a kill -9; the writer thread fsyncs the journal
once per batch and then writes the batch to the database. While the database is down rows wait in a bounded
memory buffer and are retried; past the bound they wait in the journal alone and are replayed from it. A
segment is deleted once the database holds every row in it. Journals left by a process that died are replayed
at start and every `scan_interval` seconds (idempotent by query id). A row the database refuses for good is set
aside in `rejected-<pid>.jsonl` beside the journal and reported, never dropped silently.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from intelrouter import store
from intelrouter.capture import QueryRecord, write_rows
from intelrouter.config import Settings
from intelrouter.errors import InputError, StoreError, first_line
from intelrouter.journal import Journal, ReadResult, Segment, line_of, read_rows

log = logging.getLogger(__name__)

Entry = tuple[Segment | None, dict[str, Any]]  # a buffered row and the journal segment holding it (None: not held)


def is_transient(exc: BaseException) -> bool:
    """True for errors that mean "the database is not reachable now" (retry), not "this row is bad"."""
    if isinstance(exc, StoreError | OperationalError | InterfaceError | DisconnectionError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class QueryLogWriter:
    """A thread that writes submitted `queries` rows in batches; the caller never waits for the database."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int | None = None,
        buffer_size: int | None = None,
        journal_dir: Path | None = None,
        flush_interval: float = 0.2,
        max_backoff: float = 2.0,
        scan_interval: float = 10.0,
        rotate_seconds: float = 5.0,
        segment_rows: int = 50_000,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size or settings.log_batch_size
        self.buffer_size = buffer_size or settings.log_buffer_size
        self.journal = Journal(Path(journal_dir or settings.journal_dir), segment_rows)
        self.flush_interval, self.max_backoff, self.scan_interval = flush_interval, max_backoff, scan_interval
        self.rotate_seconds = rotate_seconds
        self._buffer: deque[Entry] = deque()
        self._pending: dict[str, dict[str, Any]] = {}  # buffered + in-flight rows by id
        self._cond = threading.Condition()
        self._stopping = self._flush_now = False
        self._journal_open = False
        self._next_scan = 0.0
        self._thread: threading.Thread | None = None
        self.written = self.journaled = self.overflowed = self.replayed = self.rejected = 0
        self.torn_lines = self.write_failures = self.lost = 0
        self.last_error: str | None = None
        self.journal_error: str | None = None

    # --- the caller's side --------------------------------------------------------------------------

    def start(self) -> QueryLogWriter:
        """Open the journal and start the writer thread (which first replays journals left by dead processes)."""
        try:
            self.journal.open()
            self._journal_open = True
        except OSError as exc:  # a read-only or full disk must not keep the server from answering
            self.journal_error = first_line(exc)
            log.error("query journal %s unusable, rows wait in memory only: %s", self.journal.directory, exc)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="query-log-writer", daemon=True)
        self._thread.start()
        return self

    def submit(self, row: dict[str, Any]) -> None:
        """Journal one prepared `queries` row and queue it for the database; never waits for the database."""
        line = line_of(row)
        with self._cond:
            seg = self._append(line)
            if len(self._pending) < self.buffer_size and not self._stopping:
                if seg is not None:
                    seg.held += 1
                self._buffer.append((seg, row))
                self._pending[row["id"]] = row
                if len(self._buffer) >= self.batch_size:
                    self._cond.notify_all()
                return
            if seg is not None:  # past the memory bound: the row waits in the journal alone
                seg.overflow = True
                self.overflowed += 1
                return
            self.lost += 1
        log.error("query row %s lost: the journal is unusable and the memory buffer is full", row.get("id"))

    @property
    def queue_depth(self) -> int:
        """Rows waiting in memory to be written (buffered and in flight)."""
        return len(self._pending)

    @property
    def backlog(self) -> int:
        """Rows of this process not in the database yet (in memory or in the journal alone)."""
        with self._cond:
            return self.journal.backlog if self._journal_open else len(self._pending)

    def is_pending(self, query_id: str) -> bool:
        """True while a submitted row is in memory and not in the database yet."""
        return query_id in self._pending

    def wait_written(self, query_id: str, timeout: float = 5.0) -> bool:
        """Ask for an immediate write and wait until this row is stored; False when it is not by `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            while query_id in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted row is in the database; False when some are not after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            while self._pending or (self._journal_open and self.journal.backlog):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._flush_now = True
                self._cond.notify_all()
                self._cond.wait(min(left, self.flush_interval))
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is buffered (for up to `timeout` s) and stop; rows the database did not take stay journaled."""
        if self._thread and self._thread.is_alive():
            self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=max(timeout, 1.0) + 30)
        with self._cond:
            rest = len(self._buffer)
            self._buffer.clear()
            self._pending.clear()
            if self._journal_open:
                left = self.journal.backlog
                self._sync()
                self.journal.close()
                self._journal_open = False
                if left:
                    log.warning("database unavailable at shutdown: %d query rows stay in the journal %s and are "
                                "written at the next start", left, self.journal.directory)
            elif rest:
                self.lost += rest
                log.error("database unavailable at shutdown and no journal: %d query rows lost", rest)

    def stats(self) -> dict[str, Any]:
        """Counters for /health and /metrics (`spilled`: rows past the memory bound, waiting in the journal)."""
        return {
            "queue_depth": self.queue_depth, "journal_backlog": self.backlog, "written": self.written,
            "journaled": self.journaled, "spilled": self.overflowed, "replayed": self.replayed,
            "rejected": self.rejected, "torn_lines": self.torn_lines, "dropped": self.lost,
            "write_failures": self.write_failures, "last_error": self.last_error, "journal_error": self.journal_error,
        }

    # --- the writer thread --------------------------------------------------------------------------

    def _append(self, line: bytes) -> Segment | None:
        """Journal one line (under the lock); None when the journal is unusable."""
        if not self._journal_open:
            return None
        try:
            seg = self.journal.append(line)
        except OSError as exc:
            self.journal_error = first_line(exc)
            log.error("could not journal a query row (it waits in memory only): %s", exc)
            return None
        self.journaled += 1
        return seg

    def _run(self) -> None:
        while True:
            try:
                self._loop()
                return
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any surprise; rows stay journaled
                log.exception("query log writer failed, restarting it: %s", exc)
                self.last_error = first_line(exc)
                time.sleep(self.max_backoff)

    def _loop(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:
                    self._cond.wait(backoff)
                elif not self._flush_now and len(self._buffer) < self.batch_size and not self._stopping:
                    self._cond.wait(self.flush_interval)
                if self._stopping and (backoff or not self._buffer):
                    return  # stop() closes the journal: what is left waits there for the next start
                self._flush_now = False
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            ok = True
            if batch:
                self._sync()  # on disk before the database is asked: a machine crash loses one batch interval at most
                stored = self._store([row for _, row in batch])
                with self._cond:
                    for seg, row in batch[:stored]:
                        self._pending.pop(row["id"], None)
                        if seg is not None:
                            seg.settled += 1
                    self._buffer.extendleft(reversed(batch[stored:]))
                    self._cond.notify_all()
                ok = stored == len(batch)
            ok = ok and self._housekeeping()
            backoff = 0.0 if ok else min(max(backoff * 2, 0.1), self.max_backoff)

    def _housekeeping(self) -> bool:
        """While the database takes writes: rotate the journal every `rotate_seconds` (so a crash leaves little to
        replay), delete settled segments, replay overflowed ones and dead processes' journals.

        Returns False when the database failed meanwhile (back off)."""
        if not self._journal_open:
            return True
        with self._cond:
            cur = self.journal.current
            if cur is not None and cur.appended and (
                    time.monotonic() - cur.opened >= self.rotate_seconds or (cur.overflow and not self._buffer)):
                try:
                    self.journal.rotate()  # an overflowed segment is replayed from its file once closed
                except OSError as exc:
                    self.journal_error = first_line(exc)
            ready = [s for s in self.journal.segments if s.done]
        for seg in ready:
            if seg.overflow and not self._replay(seg.path, seg.fd):
                return False
            with self._cond:
                self.journal.release(seg)
                self._cond.notify_all()
        if time.monotonic() >= self._next_scan:
            if not self.replay_orphans():
                return False
            self._next_scan = time.monotonic() + self.scan_interval
        return True

    def replay_orphans(self) -> bool:
        """Replay the journals no live process holds (a killed server's, this one's from before a restart).

        Each is deleted once the database holds its rows. Returns False when the database failed meanwhile."""
        for path, fd in self.journal.orphans():
            try:
                if not self._replay(path, fd):
                    return False
                path.unlink(missing_ok=True)
                log.info("replayed the query journal %s", path.name)
            finally:
                os.close(fd)
        return True

    def _replay(self, path: Path, fd: int) -> bool:
        """Store every row of a journal file (skipping what is stored); False when the database failed."""
        result, batch = ReadResult(), []
        for lineno, obj in read_rows(fd, result):
            try:
                batch.append(QueryRecord.model_validate(obj).to_row(self.settings))
            except (ValidationError, InputError) as exc:
                self._set_aside([obj], f"{path.name}:{lineno}: {first_line(exc)}")
                continue
            if len(batch) >= self.batch_size:
                if self._store(batch, replay=True) < len(batch):
                    return False
                batch = []
        if batch and self._store(batch, replay=True) < len(batch):
            return False
        if result.torn is not None:
            self.torn_lines += 1
            log.warning("%s:%d: skipped a torn last line (%d bytes cut short by a crash)", path.name,
                        result.torn[0], len(result.torn[1]))
        for lineno, raw in result.bad:
            self._set_aside([raw], f"{path.name}:{lineno}: not a JSON object")
        return True

    def _store(self, rows: list[dict[str, Any]], replay: bool = False) -> int:
        """Write rows; returns how many from the start are settled (stored, or set aside when the database refuses
        them for good). Fewer than all: the database is unreachable, the rest is retried later."""
        try:
            n = self._insert(rows)
        except Exception as exc:  # noqa: BLE001 - sorted below into "retry later" and "bad row"
            if is_transient(exc):
                self._failed(exc)
                return 0
            log.warning("query log batch refused (%s); writing its rows one by one", first_line(exc))
        else:
            self._count(n, replay)
            return len(rows)
        for i, row in enumerate(rows):  # a permanent error: find the bad rows, keep the good ones
            try:
                self._count(self._insert([row]), replay)
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    self._failed(exc)
                    return i
                self._set_aside([row], f"query {row.get('id')}: {first_line(exc)}")
        return len(rows)

    def _count(self, n: int, replay: bool) -> None:
        if replay:
            self.replayed += n
        else:
            self.written += n

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        with store.connect(self.settings) as conn:
            return write_rows(conn, rows, batch_size=len(rows))

    def _sync(self) -> None:
        if not self._journal_open:
            return
        try:
            self.journal.sync()
        except OSError as exc:
            self.journal_error = first_line(exc)
            log.error("could not fsync the query journal: %s", exc)

    def _set_aside(self, rows: list[Any], reason: str) -> None:
        """Keep rows the database refuses for good in rejected-<pid>.jsonl beside the journal, and say so."""
        self.rejected += len(rows)
        path = self.journal.directory / f"rejected-{os.getpid()}.jsonl"
        log.error("query row refused by the database, kept in %s: %s", path, reason)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as fh:
                for row in rows:
                    fh.write(row if isinstance(row, bytes) else line_of(row))
        except OSError as exc:
            self.lost += len(rows)
            log.error("could not keep %d refused query rows in %s: %s", len(rows), path, exc)

    def _failed(self, exc: BaseException) -> None:
        self.write_failures += 1
        message = first_line(exc)
        if message != self.last_error:
            log.warning("query log write failed, rows kept for retry: %s", message)
        self.last_error = message
