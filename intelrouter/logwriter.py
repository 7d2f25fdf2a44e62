"""The background query-log writer: `queries` rows go to the database in batches, off the request path.

Nothing is lost: while the database is down rows wait in a bounded buffer and are retried; past the
bound they are appended to a JSONL spill file in the `intelrouter capture import` format; at shutdown
the buffer is flushed (or spilled when the database is still down).
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from intelrouter import store
from intelrouter.capture import write_rows
from intelrouter.config import Settings
from intelrouter.errors import StoreError, first_line

log = logging.getLogger(__name__)

# the columns a spilled line carries; identifiers are already hashed, so they go as user_hash/session_hash
SPILL_FIELDS = (
    "id", "created_at", "text", "user_hash", "session_hash", "language", "predicted_label", "top_label",
    "confidence", "uncertain", "provider", "model_version", "variant", "latency_ms",
)


def is_transient(exc: BaseException) -> bool:
    """True for errors that mean "the database is not reachable now" (retry), not "this row is bad"."""
    if isinstance(exc, StoreError | OperationalError | InterfaceError | DisconnectionError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def spill_line(row: dict[str, Any]) -> str:
    """One `queries` row as a JSONL line that `intelrouter capture import` reads back unchanged."""
    record = {k: row.get(k) for k in SPILL_FIELDS}
    if isinstance(record["created_at"], datetime):
        record["created_at"] = record["created_at"].isoformat()
    return json.dumps(record, ensure_ascii=False)


class QueryLogWriter:
    """A thread that writes submitted `queries` rows in batches and never blocks the caller."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int | None = None,
        buffer_size: int | None = None,
        spill_path: Path | None = None,
        flush_interval: float = 0.2,
        max_backoff: float = 2.0,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size or settings.log_batch_size
        self.buffer_size = buffer_size or settings.log_buffer_size
        self.spill_path = Path(spill_path or settings.spill_path)
        self.flush_interval, self.max_backoff = flush_interval, max_backoff
        self._buffer: deque[dict[str, Any]] = deque()
        self._pending: dict[str, dict[str, Any]] = {}  # buffered + in-flight rows by id
        self._cond = threading.Condition()
        self._spill_lock = threading.Lock()
        self._stopping = False
        self._flush_now = False
        self._thread: threading.Thread | None = None
        self.written = self.spilled = self.dropped = self.write_failures = 0
        self.last_error: str | None = None

    # --- the caller's side --------------------------------------------------------------------------

    def start(self) -> QueryLogWriter:
        """Start the writer thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="query-log-writer", daemon=True)
        self._thread.start()
        return self

    def submit(self, row: dict[str, Any]) -> None:
        """Queue one prepared `queries` row; past the buffer bound it goes to the spill file instead."""
        with self._cond:
            if len(self._pending) < self.buffer_size and not self._stopping:
                self._buffer.append(row)
                self._pending[row["id"]] = row
                if len(self._buffer) >= self.batch_size:
                    self._cond.notify_all()
                return
        self._spill([row])

    @property
    def queue_depth(self) -> int:
        """Rows waiting to be written (buffered and in flight)."""
        return len(self._pending)

    def is_pending(self, query_id: str) -> bool:
        """True while a submitted row has not reached the database yet."""
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
        """Wait until every submitted row is written; False when some are still waiting after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, self.flush_interval))
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Flush what is buffered (for up to `timeout` s), spill whatever the database did not take, stop."""
        if self._thread and self._thread.is_alive():
            self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=max(timeout, 1.0) + 30)
        with self._cond:
            rest = list(self._buffer)
            self._buffer.clear()
            for row in rest:
                self._pending.pop(row["id"], None)
        if rest:
            log.warning("database still unavailable at shutdown: %d query rows spilled to %s", len(rest),
                        self.spill_path)
            self._spill(rest)

    def stats(self) -> dict[str, Any]:
        """Counters for /health and /metrics."""
        return {
            "queue_depth": self.queue_depth,
            "written": self.written,
            "spilled": self.spilled,
            "dropped": self.dropped,
            "write_failures": self.write_failures,
            "last_error": self.last_error,
        }

    # --- the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:
                    self._cond.wait(backoff)
                elif not self._flush_now and len(self._buffer) < self.batch_size and not self._stopping:
                    self._cond.wait(self.flush_interval)
                if self._stopping and (backoff or not self._buffer):
                    return  # stop() spills what is left
                self._flush_now = False
                n = min(self.batch_size, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(n)]
            if not batch:
                continue
            failed = self._write(batch)
            with self._cond:
                done = batch if failed is None else batch[: len(batch) - len(failed)]
                for row in done:
                    self._pending.pop(row["id"], None)
                if failed:
                    self._buffer.extendleft(reversed(failed))
                self._cond.notify_all()
            backoff = min(max(backoff * 2, 0.1), self.max_backoff) if failed else 0.0

    def _write(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Write a batch; returns None when done, or the tail of rows to retry after a transient error."""
        try:
            self.written += self._insert(batch)
            return None
        except Exception as exc:  # noqa: BLE001 - sorted below into "retry later" and "bad row"
            if is_transient(exc):
                self._failed(exc)
                return batch
            log.warning("query log batch rejected (%s); writing its rows one by one", exc)
        for i, row in enumerate(batch):  # a permanent error: find the bad rows, keep the good ones
            try:
                self.written += self._insert([row])
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    self._failed(exc)
                    return batch[i:]
                self.dropped += 1
                log.error("query row %s dropped: the database rejected it (%s)", row.get("id"), exc)
        return None

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        with store.connect(self.settings) as conn:
            return write_rows(conn, rows, batch_size=len(rows))

    def _failed(self, exc: BaseException) -> None:
        self.write_failures += 1
        message = first_line(exc)
        if message != self.last_error:
            log.warning("query log write failed, rows kept for retry: %s", message)
        self.last_error = message

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        try:
            lines = "".join(spill_line(r) + "\n" for r in rows)
            with self._spill_lock:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                with self.spill_path.open("a", encoding="utf-8") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX)  # several workers may share the file: no torn lines
                    fh.write(lines)
                self.spilled += len(rows)
        except Exception as exc:  # noqa: BLE001 - a full disk must not take the server down
            self.dropped += len(rows)
            log.error("could not spill %d query rows to %s: %s", len(rows), self.spill_path, exc)
