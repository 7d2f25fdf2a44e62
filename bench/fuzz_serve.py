"""Fuzzing a real `intelrouter serve` on PostgreSQL: no 5xx, and every answered query has its `queries` row.

A private PostgreSQL server (devservers), a small CLINC150 router trained and registered with `intelrouter
train`, then N seeded random requests of every shape — JSON of every type, NUL characters, escaped lone
surrogates, control characters, over-long and empty values, raw bytes, wrong content types and methods, query
strings — on every endpoint, from 4 client threads. The server is stopped gracefully and the store is read.
Prints a markdown block.

    .venv/bin/python bench/fuzz_serve.py [--requests 10000] [--seed 7]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import sqlalchemy as sa

from devservers.ports import free_port
from devservers.postgres import PostgresServer
from intelrouter.config import telemetry_off

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clinc150" / "clinc150_full.csv"
INTENTS = ["balance", "transfer", "weather", "timer", "alarm", "translate", "flight_status", "book_hotel"]
POSTS = ["/route"] * 6 + ["/api/query"] * 2 + ["/feedback"] * 3 + ["/override"] * 2 + ["/admin/reload"]
GETS = ["/health", "/metrics", "/dashboard", "/dashboard/plotly.js", "/docs", "/openapi.json"]
ELSEWHERE = ["/nope", "/route/x", "/"]
NASTY = ["\x00", "a\x00b", "\\ud800", "\u202e", "\r\n\t", "", " ", "é" * 300, "x" * 2001, "x" * 257, "🙂" * 40,
         "'; DROP TABLE queries; --", "%00", "\x7f", "\ufeff"]
KEY = "fuzz-key-2f7c"


def value(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value, nasty strings favoured."""
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 1.5, 1e308, -0.0])
    if kind in (3, 4, 5):
        return rng.choice(NASTY) if rng.random() < 0.5 else "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x2FFF)])) for _ in range(rng.randrange(40)))
    if kind == 6:
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["text", "x", "label"]): value(rng, depth + 1) for _ in range(rng.randrange(3))}


def request(rng: random.Random, query_ids: list[str]) -> dict:
    """One random request: method, path, headers, body."""
    pick = rng.random()
    path = rng.choice(POSTS if pick < 0.75 else GETS if pick < 0.95 else ELSEWHERE)
    natural = "GET" if path in GETS else "POST"
    fields = {"text": rng.choice(["what is my balance", "set an alarm", "will it rain", value(rng), value(rng)]),
              "user_id": value(rng), "session_id": value(rng), "language": rng.choice(["en", value(rng)]),
              "query_id": rng.choice([*query_ids[-20:], "00000000-0000-0000-0000-000000000000", value(rng)]),
              "label": rng.choice(INTENTS + [value(rng)])}
    body = {k: v for k, v in fields.items() if rng.random() < 0.7}
    if rng.random() < 0.15:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
    elif rng.random() < 0.1:
        raw = json.dumps(value(rng)).encode()
    else:
        raw = json.dumps(body).replace("\\\\ud800", "\\ud800").encode()  # an escaped lone surrogate, as sent
    headers = {"content-type": rng.choice(["application/json"] * 6 + ["text/plain", "", "application/json; x=1"])}
    if rng.random() < 0.5:
        headers["authorization"] = rng.choice([f"Bearer {KEY}", "Bearer wrong", KEY, "Basic x"])
    query = rng.choice(["", "", "?days=0", "?days=abc", "?days=3", "?x=%00", "?days=%00"])
    method = natural if rng.random() < 0.85 else rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
    return {"method": method, "url": path + query, "content": raw, "headers": headers}


def run(cmd: list[str], env: dict[str, str]) -> str:
    """Run a command, fail loudly with its output."""
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def main() -> None:
    """Run the fuzz and print the markdown block."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fuzz-serve-"))
    pg_root = Path(tempfile.mkdtemp(prefix="fuzz-pg-"))
    pg = PostgresServer(pg_root).init()
    pg.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "MLFLOW_"))}
    telemetry_off(env)
    env.update({"INTELROUTER_DATA_DIR": str(work / "data"), "INTELROUTER_DATABASE_URL": pg.url,
                "INTELROUTER_MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "INTELROUTER_API_KEY": KEY,
                "PYTHONPATH": str(ROOT)})
    cli = [sys.executable, "-m", "cli"]
    proc = None
    try:
        rows = [r for r in csv.DictReader(DATASET.open(encoding="utf-8"))
                if r["split"] == "train" and r["label"] in INTENTS]
        data = work / "train.csv"
        with data.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([("text", "label"), *((r["text"], r["label"]) for r in rows)])
        run([*cli, "data", "import", str(data)], env)
        run([*cli, "train"], env)
        port = free_port()
        proc = subprocess.Popen([*cli, "serve", "--port", str(port), "--log-level", "warning"], env=env, cwd=ROOT,
                                stdout=(work / "serve.log").open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        statuses: Counter[int] = Counter()
        server_errors: list[str] = []
        answered: list[str] = []
        lock = threading.Lock()
        t0 = time.perf_counter()

        def client(n: int) -> None:
            rng = random.Random(args.seed * 1000 + n)
            with httpx.Client(base_url=base, timeout=30) as http:
                for _ in range(args.requests // 4):
                    req = request(rng, answered)
                    res = http.request(**req)
                    with lock:
                        statuses[res.status_code] += 1
                        if res.status_code >= 500:
                            server_errors.append(f"{req['method']} {req['url']} {req['content'][:80]!r}: {res.text}")
                        if res.status_code == 200 and req["url"].startswith(("/route", "/api/query")) \
                                and req["method"] == "POST":
                            answered.append(res.json()["query_id"])

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        os.killpg(proc.pid, signal.SIGTERM)  # a graceful stop writes the buffered rows
        proc.wait(120)
        proc = None
        engine = sa.create_engine(pg.url)
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT id FROM queries")).scalars())
        engine.dispose()
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
        pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
    missing = set(answered) - stored
    print(f"`python bench/fuzz_serve.py --requests {args.requests} --seed {args.seed}` (PostgreSQL, one uvicorn "
          f"worker, 4 client threads; load average {os.getloadavg()[0]:.1f} on 2 cores at the end)\n")
    print(f"- {sum(statuses.values())} requests in {seconds:.0f} s; statuses: "
          + ", ".join(f"{s} × {n}" for s, n in sorted(statuses.items())))
    print(f"- 5xx answers: {len(server_errors)}" + (f" (first: {server_errors[0]})" if server_errors else ""))
    print(f"- answered /route queries: {len(answered)}; without a `queries` row after the stop: {len(missing)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
