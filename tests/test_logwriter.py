"""The background query-log writer against real databases: batches, outages, the bound, the spill file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import wait_for
from fastapi.testclient import TestClient
from serving_fixtures import query_rows, route, use_registry

from devservers.ports import free_port
from intelrouter import store
from intelrouter.capture import QueryRecord
from intelrouter.config import Settings, load_settings
from intelrouter.logwriter import QueryLogWriter, spill_line
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
    assert writer.stats()["queue_depth"] == 0 and writer.spilled == 0 and writer.dropped == 0


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


def test_a_row_the_database_rejects_is_dropped_and_the_rest_written(settings: Settings) -> None:
    writer = QueryLogWriter(settings, batch_size=10, flush_interval=0.05).start()
    good = [make_row(settings, i) for i in range(9)]
    bad = dict(make_row(settings, 99), text=None)  # NOT NULL column: a permanent error, not an outage
    for row in [*good[:4], bad, *good[4:]]:
        writer.submit(row)
    writer.stop()
    assert sorted(stored_ids(settings)) == sorted(r["id"] for r in good)
    assert writer.dropped == 1 and writer.write_failures == 0


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
    assert writer.spilled == 0 and writer.dropped == 0
    store.dispose_engines()


def test_past_the_bound_rows_spill_and_capture_import_replays_them(settings: Settings, tmp_path: Path) -> None:
    down = load_settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
                         data_dir=tmp_path / "down")
    spill = tmp_path / "spill" / "queries.jsonl"
    writer = QueryLogWriter(down, buffer_size=50, batch_size=10, spill_path=spill, flush_interval=0.05).start()
    rows = [make_row(settings, i, user=f"person-{i}") for i in range(200)]
    for row in rows:
        writer.submit(row)
    assert writer.queue_depth == 50 and writer.spilled == 150  # the bound holds while the database is down
    writer.stop(timeout=0.5)  # still down at shutdown: the buffer goes to the spill file too
    assert writer.spilled == 200 and writer.dropped == 0 and writer.queue_depth == 0
    lines = spill.read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(r["id"] for r in rows)

    cli = [sys.executable, "-m", "cli", "capture", "import", str(spill)]
    first = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "imported 200 new queries" in first.stdout
    again = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert "imported 0 new queries (200 already present)" in again.stdout

    q = store.queries
    with store.connect(settings) as conn:
        got = {r.id: r for r in conn.execute(sa.select(q))}
    assert set(got) == {r["id"] for r in rows}
    for row in rows:  # identifiers were hashed once, at routing time, not again on replay
        assert got[row["id"]].user_hash == store.hash_identifier(f"person-{rows.index(row)}", settings.hash_salt)
        assert got[row["id"]].session_hash == row["session_hash"]
        assert got[row["id"]].created_at == row["created_at"]
        assert got[row["id"]].variant == "production" and got[row["id"]].latency_ms == 1.5


def test_spill_line_round_trips_through_query_record(settings: Settings) -> None:
    row = make_row(settings, 5)
    back = QueryRecord.model_validate(json.loads(spill_line(row))).to_row(settings)
    assert back == row


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
