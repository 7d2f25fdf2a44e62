"""Bench: bulk capture into PostgreSQL (rows/s, anchored on a raw COPY) and a 1 000 000-row export (peak RSS).

Run: .venv/bin/python bench/capture_export.py [--rows 200000] [--export-rows 1000000]
Starts its own throwaway PostgreSQL server (devservers/postgres.py, as the tests do) and prints a markdown block.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from devservers.postgres import PostgresServer
from intelrouter import store
from intelrouter.capture import log_queries
from intelrouter.config import load_settings

TEXTS = ["what is my account balance", "play some jazz please", "how do i reset my pin", "book a table for two"]


def records(n: int) -> list[dict]:
    """n capture records as the serving layer or an import would hand them over."""
    t0 = datetime(2026, 11, 1)
    return [{"id": str(uuid.uuid4()), "text": f"{TEXTS[i % 4]} {i}", "user_id": f"user-{i % 977}",
             "language": "en", "predicted_label": "balance", "confidence": (i % 100) / 100,
             "provider": "intelrouter", "model_version": "1.0.0", "variant": "production",
             "latency_ms": 1.5, "created_at": t0 + timedelta(seconds=i)} for i in range(n)]


def bench_capture(url: str, n: int) -> tuple[float, float]:
    """Rows/s of log_queries and of a raw COPY of the same prepared rows (the anchor)."""
    settings = load_settings(database_url=url, data_dir=Path(tempfile.mkdtemp()))
    store.upgrade(settings)
    recs = records(n)
    t = time.perf_counter()
    assert log_queries(settings, recs) == n
    ours = n / (time.perf_counter() - t)
    import psycopg

    rows = [(r["id"], r["created_at"], r["text"], r["predicted_label"], r["confidence"]) for r in records(n)]
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute("CREATE TEMP TABLE anchor (id text, created_at timestamp, text text, label text, c float8)")
        t = time.perf_counter()
        with conn.cursor().copy("COPY anchor FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        anchor = n / (time.perf_counter() - t)
    return ours, anchor


def fill_ml_data(url: str, n: int) -> None:
    """n approved rows in ml_data, written with COPY so filling is not what is measured."""
    import psycopg

    settings = load_settings(database_url=url, data_dir=Path(tempfile.mkdtemp()))
    store.upgrade(settings)
    now = datetime(2026, 11, 1)
    buf = io.StringIO()
    for i in range(n):
        buf.write(f"{i:064d}\t{TEXTS[i % 4]} {i}\tlabel_{i % 150}\ten\timport\t{now}\t{now}\n")
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        with conn.cursor().copy(
            "COPY ml_data (dedup_key, text, label, language, source, created_at, updated_at) FROM STDIN"
        ) as copy:
            copy.write(buf.getvalue())


NAIVE = """
import json, sys, sqlalchemy as sa
rows = sa.create_engine(sys.argv[1]).connect().execute(sa.text("SELECT * FROM ml_data")).mappings().all()
with open(sys.argv[2], "w") as fh:
    for r in rows:
        fh.write(json.dumps(dict(r), default=str) + "\\n")
"""


PEAK = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); " \
       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def child_peak_mb(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of `cmd`, measured by a wrapper process that runs only it."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, int(out.stdout.strip()) / 1024


def main() -> None:
    """Run both benches and print the markdown block for BENCHMARKS.md."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--export-rows", type=int, default=1_000_000)
    args = ap.parse_args()
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="intelrouter-pg-"))).init()
    server.start()
    try:
        cap_url = server.url
        ours, anchor = bench_capture(cap_url, args.rows)
        fill_ml_data(cap_url, args.export_rows)
        out = Path(tempfile.mkdtemp()) / "export.jsonl"
        env = {**os.environ, "INTELROUTER_DATABASE_URL": cap_url, "INTELROUTER_DATA_DIR": str(out.parent)}
        ours_wall, ours_mb = child_peak_mb([sys.executable, "-m", "cli", "export", "--output",
                                            str(out)], env)
        naive_wall, naive_mb = child_peak_mb([sys.executable, "-c", NAIVE, cap_url, str(out) + ".naive"], env)
        lines = sum(1 for _ in out.open())
    finally:
        server.stop()
    rows = [
        (f"bulk capture into PostgreSQL, {args.rows:,} rows", f"{ours:,.0f} rows/s",
         f"raw COPY {anchor:,.0f} rows/s", ours / anchor),
        (f"export of {lines:,} rows: peak RSS", f"{ours_mb:,.0f} MB", f"fetch-all {naive_mb:,.0f} MB",
         ours_mb / naive_mb),
        (f"export of {lines:,} rows: wall time", f"{ours_wall:.1f} s ({lines / ours_wall:,.0f} rows/s)",
         f"fetch-all {naive_wall:.1f} s", ours_wall / naive_wall),
    ]
    print("| measure | IntelRouter | anchor | ratio |\n|---|---:|---:|---:|")
    for what, value, anchor_value, ratio in rows:
        print(f"| {what} | {value} | {anchor_value} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
