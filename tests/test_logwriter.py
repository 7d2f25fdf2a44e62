"""The background query-log writer against real databases: batches, outages, the bound, the write-ahead journal.

Every answered query's row is journaled before its answer leaves, so no kill -9 loses one: the tests kill real
processes (a writer, `intelrouter serve`) with SIGKILL while the database refuses or cannot take writes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import wait_for
from fastapi.testclient import TestClient
from server_support import Load, Server, writes_refused
from serving_fixtures import query_rows, route, use_registry

from devservers.ports import free_port
from intelrouter import store
from intelrouter.capture import QueryRecord
from intelrouter.config import Settings, load_settings
from intelrouter.journal import line_of
from intelrouter.logwriter import QueryLogWriter
from intelrouter.salt import identifier_salt
from serving.app import create_app


def make_row(settings: Settings, i: int, user: str | None = None) -> dict[str, Any]:
    """A `queries` row as the router would log it."""
    return QueryRecord(
        id=str(uuid.uuid4()), text=f"what is my balance {i}", user_id=user or f"user-{i % 7}",
        session_id=f"s-{i % 3}", language="en", predicted_label="balance", top_label="balance",
        confidence=0.91, provider="intelrouter", model_version="3", variant="production", latency_ms=1.5,
    ).to_row(settings)


def stored_ids(settings: Settings) -> list[str]:
    """Every query id in the store (duplicates would show as repeats)."""
    with store.connect(settings) as conn:
        return list(conn.execute(sa.select(store.queries.c.id)).scalars())


def test_rows_are_written_in_batches_and_flushed_on_stop(settings: Settings) -> None:
    writer = QueryLogWriter(settings, batch_size=50, flush_interval=60).start()
    rows = [make_row(settings, i) for i in range(120)]
    for row in rows:
        writer.submit(row)
    # two full batches go without waiting for the (long) flush interval; the last 20 wait for stop()
    assert wait_for(lambda: writer.written == 100, timeout=20)
    assert writer.queue_depth == 20
    writer.stop()
    assert sorted(stored_ids(settings)) == sorted(r["id"] for r in rows)
    assert writer.stats()["queue_depth"] == 0 and writer.overflowed == 0 and writer.lost == 0
    assert not list(settings.journal_dir.glob("*.journal"))  # every row stored: the journal is gone


def test_wait_written_stores_a_just_submitted_row(settings: Settings) -> None:
    writer = QueryLogWriter(settings, batch_size=1000, flush_interval=60).start()
    try:
        row = make_row(settings, 1)
        writer.submit(row)
        assert writer.is_pending(row["id"])
        assert writer.wait_written(row["id"], timeout=20)
        assert not writer.is_pending(row["id"])
        assert stored_ids(settings) == [row["id"]]
    finally:
        writer.stop()


def journal_ids(directory: Path) -> list[str]:
    """The query ids in the journal segments of a directory."""
    return [json.loads(line)["id"] for path in sorted(directory.glob("*.journal"))
            for line in path.read_text().splitlines() if line.strip()]


def test_a_row_the_database_refuses_is_set_aside_and_reported_not_dropped(settings: Settings) -> None:
    writer = QueryLogWriter(settings, batch_size=10, flush_interval=0.05).start()
    good = [make_row(settings, i) for i in range(9)]
    bad = dict(make_row(settings, 99), text=None)  # NOT NULL column: a permanent error, not an outage
    for row in [*good[:4], bad, *good[4:]]:
        writer.submit(row)
    writer.stop()
    assert sorted(stored_ids(settings)) == sorted(r["id"] for r in good)
    assert writer.rejected == 1 and writer.lost == 0 and writer.write_failures == 0
    kept = list(settings.journal_dir.glob("rejected-*.jsonl"))
    assert [json.loads(line)["id"] for line in kept[0].read_text().splitlines()] == [bad["id"]]
    assert journal_ids(settings.journal_dir) == []  # the journal of settled rows is gone


def test_every_row_is_journaled_before_submit_returns(settings: Settings, tmp_path: Path) -> None:
    down = load_settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
                         data_dir=settings.data_dir)
    writer = QueryLogWriter(down, batch_size=5, flush_interval=0.05).start()
    try:
        ids = []
        for i in range(40):
            row = make_row(settings, i)
            writer.submit(row)
            ids.append(row["id"])
            assert journal_ids(down.journal_dir) == ids  # on disk (in the kernel) before the caller answers
        assert wait_for(lambda: writer.write_failures >= 1, timeout=30)
    finally:
        writer.stop(timeout=0.5)
    assert journal_ids(down.journal_dir) == ids  # the database never took them: they stay for the next start


KILLED_WRITER = """
import json, os, signal, sys
from intelrouter.capture import QueryRecord
from intelrouter.config import load_settings
from intelrouter.logwriter import QueryLogWriter
settings = load_settings()
writer = QueryLogWriter(settings, batch_size=100_000, flush_interval=3600).start()  # nothing written before the kill
ids = []
for i in range(int(sys.argv[1])):
    row = QueryRecord(text=f"what is my balance {i}", user_hash="h" * 64, predicted_label="balance",
                      confidence=0.9).to_row(settings)
    writer.submit(row)
    ids.append(row["id"])
print(json.dumps(ids), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_with_rows_in_memory_loses_none(settings: Settings) -> None:
    store.upgrade(settings)
    res = subprocess.run([sys.executable, "-c", KILLED_WRITER, "300"], capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr
    ids = json.loads(res.stdout)
    assert stored_ids(settings) == []  # killed before any write
    writer = QueryLogWriter(settings, flush_interval=0.05).start()  # the next start replays the dead one's journal
    try:
        assert wait_for(lambda: writer.replayed == 300, timeout=60), writer.stats()
    finally:
        writer.stop()
    got = stored_ids(settings)
    assert sorted(got) == sorted(ids) and len(got) == len(set(got))
    assert journal_ids(settings.journal_dir) == []  # replayed journals are deleted


def test_a_torn_last_line_is_skipped_and_reported_and_the_rest_replayed(settings: Settings) -> None:
    store.upgrade(settings)
    rows = [make_row(settings, i) for i in range(30)]
    settings.journal_dir.mkdir(parents=True)
    left = settings.journal_dir / "queries-999999-000001.journal"  # a dead process's segment
    left.write_bytes(b"".join(line_of(r) for r in rows) + line_of(make_row(settings, 99))[:57])
    writer = QueryLogWriter(settings, flush_interval=0.05).start()
    try:
        assert wait_for(lambda: writer.replayed == 30 and not left.exists(), timeout=60), writer.stats()
    finally:
        writer.stop()
    assert sorted(stored_ids(settings)) == sorted(r["id"] for r in rows)
    assert writer.torn_lines == 1 and writer.rejected == 0


def test_past_the_memory_bound_rows_wait_in_the_journal_and_capture_import_replays_it(
    settings: Settings, tmp_path: Path
) -> None:
    down = load_settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
                         data_dir=tmp_path / "down")
    writer = QueryLogWriter(down, buffer_size=50, batch_size=10, flush_interval=0.05).start()
    rows = [make_row(settings, i, user=f"person-{i}") for i in range(200)]
    for row in rows:
        writer.submit(row)
    assert writer.queue_depth == 50 and writer.stats()["spilled"] == 150  # memory stays bounded
    assert writer.backlog == 200
    writer.stop(timeout=0.5)  # still down at shutdown: everything stays in the journal
    segments = sorted(down.journal_dir.glob("*.journal"))
    assert len(segments) == 1
    assert sorted(journal_ids(down.journal_dir)) == sorted(r["id"] for r in rows)
    with segments[0].open("ab") as fh:  # as if the machine died mid-write
        fh.write(b'{"id": "cut-sh')

    cli = [sys.executable, "-m", "cli", "capture", "import"]
    for seg in segments:
        first = subprocess.run([*cli, str(seg)], capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert f"replayed journal moved to {seg}.replayed" in first.stdout
    assert f"skipped a torn last line: {segments[0]}:201" in first.stdout
    again = subprocess.run([*cli, str(segments[0])], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "no such file" in again.stderr  # moved aside: nothing replays it twice

    q = store.queries
    with store.connect(settings) as conn:
        got = {r.id: r for r in conn.execute(sa.select(q))}
    assert set(got) == {r["id"] for r in rows}
    salt = identifier_salt(settings)
    for i, row in enumerate(rows):  # identifiers were hashed once, at routing time, not again on replay
        assert got[row["id"]].user_hash == store.hash_identifier(f"person-{i}", salt)
        assert got[row["id"]].session_hash == row["session_hash"]
        assert got[row["id"]].created_at == row["created_at"]
        assert got[row["id"]].variant == "production" and got[row["id"]].latency_ms == 1.5


def test_an_unusable_journal_is_reported_and_rows_still_reach_the_database(settings: Settings,
                                                                           tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    writer = QueryLogWriter(settings, journal_dir=blocker / "journal", flush_interval=0.05).start()
    rows = [make_row(settings, i) for i in range(20)]
    for row in rows:
        writer.submit(row)
    assert writer.flush(timeout=30)
    writer.stop()
    assert sorted(stored_ids(settings)) == sorted(r["id"] for r in rows)
    assert writer.journal_error and writer.journaled == 0 and writer.lost == 0


def test_a_journal_line_round_trips_through_query_record(settings: Settings) -> None:
    row = make_row(settings, 5)
    back = QueryRecord.model_validate(json.loads(line_of(row))).to_row(settings)
    assert back == row


@pytest.mark.embedded  # brings its own PostgreSQL server: once per CI run is enough
def test_postgres_stopped_mid_load_loses_and_duplicates_nothing(pg_server: Any, tmp_path: Path) -> None:
    settings = load_settings(database_url=pg_server.url, data_dir=tmp_path / "data")
    store.upgrade(settings)
    writer = QueryLogWriter(settings, batch_size=25, flush_interval=0.05, max_backoff=0.3).start()
    submitted: list[str] = []
    done = threading.Event()

    def load() -> None:
        for i in range(1500):
            row = make_row(settings, i)
            writer.submit(row)  # never blocks, whatever the database does
            submitted.append(row["id"])
            time.sleep(0.002)
        done.set()

    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert wait_for(lambda: writer.written >= 100, timeout=30)
        pg_server.stop()
        # the database is down: rows pile up in the buffer, writes fail and are retried
        assert wait_for(lambda: writer.write_failures >= 2 and writer.queue_depth > 50, timeout=30)
        written_while_down = writer.written
        assert loader.is_alive() or done.is_set()
        pg_server.start()
        assert done.wait(60)
        assert writer.flush(timeout=60)
    finally:
        loader.join(60)
        writer.stop()
    ids = stored_ids(settings)
    assert len(submitted) == 1500
    assert len(ids) == len(set(ids)) == 1500
    assert set(ids) == set(submitted)
    assert writer.written == 1500 and writer.written > written_while_down
    assert writer.overflowed == 0 and writer.lost == 0 and writer.rejected == 0
    store.dispose_engines()


def test_shutdown_flushes_the_log_buffer(serve_settings: Settings) -> None:
    app = create_app(serve_settings)
    with TestClient(app) as c:
        app.state.runtime.writer.flush_interval = 3600  # nothing is written until shutdown
        ids = [route(c, f"set a timer for {i} minutes")["query_id"] for i in range(5)]
        assert app.state.runtime.writer.queue_depth == 5
    assert set(query_rows(serve_settings)) == set(ids)


@pytest.mark.embedded  # brings its own PostgreSQL server: once per CI run is enough
def test_database_stopped_mid_load_loses_no_query(pg_server: Any, registry_template: Path,
                                                  tmp_path: Path, settings: Settings) -> None:
    use_registry(registry_template, tmp_path)
    pg_settings = load_settings(database_url=pg_server.url, registry_poll_seconds=5)
    with TestClient(create_app(pg_settings)) as c:
        writer = c.app.state.runtime.writer
        writer.flush_interval = 0.05
        ids = [route(c, f"what is my balance {i}")["query_id"] for i in range(30)]
        assert writer.flush(timeout=30)
        pg_server.stop()
        ids += [route(c, f"set an alarm for {i}")["query_id"] for i in range(60)]  # answers go on
        assert wait_for(lambda: writer.write_failures >= 1, timeout=30)
        assert c.get("/health").json()["log_queue_depth"] > 0
        pg_server.start()
        assert writer.flush(timeout=60)
    rows = query_rows(pg_settings)
    assert set(rows) == set(ids) and len(rows) == 90
    store.dispose_engines()


def test_serve_killed_while_the_database_refuses_writes_loses_no_answered_query(
    serve_settings: Settings, tmp_path: Path
) -> None:
    """A real `intelrouter serve` under load; the database stops taking writes; kill -9; restart (both databases)."""
    server = Server(tmp_path / "serve.log").start()
    load = Load(server.url, threads=3).start()
    try:
        assert wait_for(lambda: load.count() >= 50, timeout=120), load.failures[-3:]
        with writes_refused(serve_settings):
            n = load.count()
            assert wait_for(lambda: load.count() >= n + 300, timeout=120)  # answers go on, rows cannot be written
            assert server.signal(signal.SIGKILL) == -signal.SIGKILL
            load.stop()
        answered = {a["query_id"] for a in load.answers}
        assert answered - set(query_rows(serve_settings))  # rows of answered queries are missing now ...
        server.start()  # ... and the restarted server replays the journal the killed one left
        assert wait_for(lambda: answered <= set(query_rows(serve_settings)), timeout=120)
    finally:
        load.stop()
        server.stop()
    assert answered <= set(query_rows(serve_settings))
    assert not list(serve_settings.journal_dir.glob("*.journal"))  # stopped with the database up: nothing left


@pytest.mark.embedded  # brings its own PostgreSQL server: once per CI run is enough
def test_serve_killed_during_a_database_outage_under_load_loses_no_query_row(
    pg_server: Any, registry_template: Path, tmp_path: Path, settings: Settings
) -> None:
    """The issue's fault test: PostgreSQL stopped for 10 s under load, `intelrouter serve` killed -9 during it."""
    use_registry(registry_template, tmp_path)
    pg = load_settings(database_url=pg_server.url)
    server = Server(tmp_path / "serve.log", env={"INTELROUTER_DATABASE_URL": pg_server.url}).start()
    load = Load(server.url, threads=4).start()
    try:
        assert wait_for(lambda: load.count() >= 100, timeout=120), load.failures[-3:]
        pg_server.stop()
        down_at = time.monotonic()
        n = load.count()
        assert wait_for(lambda: load.count() >= n + 300, timeout=120)  # answering on through the outage
        assert "127.0.0.1" not in httpx.get(f"{server.url}/health", timeout=10).text  # errors stay in the log
        time.sleep(max(0.0, 5 - (time.monotonic() - down_at)))
        assert server.signal(signal.SIGKILL) == -signal.SIGKILL  # mid-outage
        load.stop()
        time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
        pg_server.start()
        server.start()
        answered = {a["query_id"] for a in load.answers}
        assert wait_for(lambda: answered <= set(query_rows(pg)), timeout=120)
    finally:
        load.stop()
        server.stop()
    rows = query_rows(pg)
    assert answered <= set(rows)
    store.dispose_engines()
