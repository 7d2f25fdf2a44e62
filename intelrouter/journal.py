"""The query journal: every answered query's row reaches a local file before its answer leaves the server.

Rows go to segments `queries-<pid>-<n>.journal` (JSONL, the `intelrouter capture import` format) with one
write(2) each, so a process killed with SIGKILL loses none: the kernel holds what was written. The writer
fsyncs a segment once per batch (a machine crash can lose the rows written since the last fsync that the
database did not take yet). A live process holds an exclusive `flock` on every segment it still needs; the
kernel drops the lock when the process dies, so a segment nobody holds was left by a process that died or
stopped while the database was down, and any writer may replay it (`orphans`).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SUFFIX = ".journal"
NEW_SUFFIX = ".journal-new"  # a segment being created: renamed to SUFFIX once locked, never replayed before


@dataclass(eq=False)
class Segment:
    """One journal file this process appends to (or did, and still holds until the database has its rows)."""

    path: Path
    fd: int
    appended: int = 0  # rows written to the file
    held: int = 0  # of those, rows also queued in the writer's memory buffer
    settled: int = 0  # of the held rows, those the database took (or that were set aside)
    overflow: bool = False  # some rows never entered the memory buffer: replay the file itself once closed
    closed: bool = False  # no more appends
    dirty: bool = False  # written since the last fsync
    opened: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        """Closed and every row it queued in memory settled (an overflowed one still needs its file replayed)."""
        return self.closed and self.settled >= self.held


@dataclass
class Journal:
    """This process's segments in one directory; `append` and `rotate` run under the caller's lock."""

    directory: Path
    segment_rows: int = 50_000
    segments: list[Segment] = field(default_factory=list)
    current: Segment | None = None
    directory_dirty: bool = False
    _count: int = 0

    def open(self) -> Journal:
        """Create the directory (private to the user) and the first segment."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.current = self._new_segment()
        return self

    def append(self, line: bytes) -> Segment:
        """Write one row's line (ending in a newline) to the current segment; returns that segment."""
        seg = self.current
        if seg is None or seg.appended >= self.segment_rows:
            try:
                self.rotate()
            except OSError:
                if seg is None:
                    raise
                # no new file (disk full?): the current one takes more rows than planned
            seg = self.current
        assert seg is not None
        os.write(seg.fd, line)
        seg.appended += 1
        seg.dirty = True
        return seg

    def rotate(self) -> None:
        """Close the current segment for appends and start a new one (when that fails, nothing changes)."""
        new = self._new_segment()
        if self.current is not None:
            self.current.closed = True
        self.current = new

    def sync(self) -> None:
        """fsync every segment written since its last fsync (and the directory after a new segment)."""
        if self.directory_dirty:
            self.directory_dirty = False
            _sync_directory(self.directory)
        for seg in list(self.segments):
            if seg.dirty:
                seg.dirty = False
                try:
                    os.fsync(seg.fd)
                except OSError:
                    seg.dirty = True
                    raise

    def release(self, seg: Segment) -> None:
        """Delete a segment whose rows the database holds, and drop its lock."""
        try:
            seg.path.unlink()
        except FileNotFoundError:
            pass
        os.close(seg.fd)
        self.segments.remove(seg)

    def close(self) -> None:
        """Delete the segments with nothing left to write, keep the others for the next start; drop every lock."""
        for seg in list(self.segments):
            seg.closed = True
            if seg.done and not seg.overflow:
                self.release(seg)
            else:
                os.close(seg.fd)
                self.segments.remove(seg)
        self.current = None

    @property
    def backlog(self) -> int:
        """Rows in this process's segments the database does not hold yet."""
        return sum(s.appended - s.settled for s in self.segments)

    def orphans(self) -> Iterator[tuple[Path, int]]:
        """Segments no live process holds, each yielded locked (path, fd); the caller closes the fd."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.iterdir()):
            if path.suffix not in (SUFFIX, NEW_SUFFIX):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # its process is alive
                continue
            if path.suffix == NEW_SUFFIX:  # created and never used: its process died before the rename
                _unlink_quietly(path)
                os.close(fd)
                continue
            yield path, fd

    def _new_segment(self) -> Segment:
        self._count += 1
        final = self.directory / f"queries-{os.getpid()}-{self._count:06d}{SUFFIX}"
        tmp = final.with_suffix(NEW_SUFFIX)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked before any scanner can see it under its final name
        os.rename(tmp, final)
        self.directory_dirty = True  # the new name reaches the disk with the next sync()
        seg = Segment(final, fd)
        self.segments.append(seg)
        return seg


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def line_of(row: dict[str, Any]) -> bytes:
    """One `queries` row as a journal line (JSON object and newline)."""
    return orjson.dumps(row) + b"\n"


@dataclass
class ReadResult:
    """What reading a journal file found besides its rows: a torn last line, lines that are not rows."""

    torn: tuple[int, bytes] | None = None  # (line number, the bytes) of a last line cut short by a crash
    bad: list[tuple[int, bytes]] = field(default_factory=list)


def read_rows(fd: int, result: ReadResult) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream (line number, object) from an open journal file; a torn last line and bad lines go to `result`."""
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                yield lineno, obj
            elif not raw.endswith(b"\n"):  # the last line, cut short mid-write
                result.torn = (lineno, raw)
            else:
                result.bad.append((lineno, raw))
