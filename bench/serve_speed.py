"""Serving speed: `intelrouter serve` against `mlflow models serve` for the same registered model.

Both servers run one worker pinned to core 0; wrk (real CLINC150 test queries, bench/clinc_queries.lua)
runs pinned to core 1. Runs are interleaved (ours, theirs, theirs, ours, ...) at each connection count;
the table reports medians, the ratio to the anchor, peak RSS per worker, that the query log kept every
answer, and that both servers give the same predictions. Prints a markdown block for BENCHMARKS.md.

    apt-get install -y wrk   # once
    .venv/bin/python bench/serve_speed.py [--duration 10] [--rounds 3] [--conns 1,8,32]
    .venv/bin/python bench/serve_speed.py --classifier mb --features '{"static": "mean3-pca256-zipf"}'
    .venv/bin/python bench/serve_speed.py --before main   # also the code of a git ref, as a third server

With `--before REF` the same registered model is also served by the code at REF (checked out into the work
directory; its own database, so that an older schema is not migrated under it), interleaved with the other two:
the "after / before" column is what the change between REF and the working tree costs or buys.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from intelrouter.config import telemetry_off

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "clinc150" / "clinc150_full.csv"
LUA = ROOT / "bench" / "clinc_queries.lua"
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict[str, str]) -> str:
    """Run a command, fail loudly with its output."""
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def prepare(work: Path, env: dict[str, str], train_split: str, train_args: list[str]) -> tuple[Path, list[str]]:
    """Import CLINC150 into ml_data, train + register with `intelrouter train`; returns the query file."""
    rows = list(csv.DictReader(DATASET.open(encoding="utf-8")))
    train = work / "train.csv"
    with train.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows((r["text"], r["label"]) for r in rows if r["split"] in train_split.split(","))
    run([str(BIN / "intelrouter"), "data", "import", str(train)], env)
    t0 = time.perf_counter()
    print(run([str(BIN / "intelrouter"), "train", *train_args], env).strip().splitlines()[-1], file=sys.stderr)
    print(f"trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    texts = [r["text"] for r in rows if r["split"] == "test"]
    queries = work / "queries.txt"
    queries.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    return queries, texts


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start a server pinned to core 0."""
    return subprocess.Popen(["taskset", "-c", "0", *cmd], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=cwd)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until GET url answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode} before it was ready ({url})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"{url} not ready after {timeout} s")


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def peak_rss_mb(pid: int) -> float:
    """Largest peak resident set (VmHWM) among a server's processes: the worker, for one-worker servers."""
    best = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            pass
    return best / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server's processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def wrk(url: str, conns: int, seconds: int, queries: Path, fmt: str) -> dict:
    """One wrk run on core 1; the Lua script's JSON summary."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA),
           url, "--", str(queries), fmt]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    res = json.loads(line.split(" ", 1)[1])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def same_predictions(ours: str, theirs: str, texts: list[str]) -> tuple[int, int, float]:
    """Send the same texts to both servers: (texts compared, label/top_label/uncertain mismatches, max |dconf|)."""
    mismatches, worst = 0, 0.0
    with httpx.Client(timeout=30) as client:
        theirs_out = client.post(theirs, json={"dataframe_records": [{"text": t} for t in texts]}).json()["predictions"]
        for text, ref in zip(texts, theirs_out, strict=True):
            got = client.post(ours, json={"text": text}).json()
            if (got["label"], got["top_label"], got["uncertain"]) != (ref["label"], ref["top_label"], ref["uncertain"]):
                mismatches += 1
            worst = max(worst, abs(got["confidence"] - ref["confidence"]))
    return len(texts), mismatches, worst


def main() -> None:
    """Run the benchmark and print the markdown block."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="Seconds per wrk run.")
    ap.add_argument("--rounds", type=int, default=3, help="Interleaved runs per server and connection count.")
    ap.add_argument("--conns", default="1,8,32", help="Connection counts.")
    ap.add_argument("--train-split", default="train", help="CLINC150 splits to train on (comma-separated).")
    ap.add_argument("--classifier", default="", help="`intelrouter train --classifier` (default: settings).")
    ap.add_argument("--features", default="", help="`intelrouter train --features` JSON, e.g. the static block.")
    ap.add_argument("--before", default="", help="Git ref whose `intelrouter serve` runs as a third server.")
    ap.add_argument("--keep", action="store_true", help="Keep the work directory.")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "MLFLOW_"))}
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    telemetry_off(env)
    env.update({
        "INTELROUTER_DATA_DIR": str(work / "data"), "INTELROUTER_DATABASE_URL": f"sqlite:///{work / 'ir.db'}",
        "INTELROUTER_MLFLOW_TRACKING_URI": tracking, "MLFLOW_TRACKING_URI": tracking,
        "INTELROUTER_ROUTES": json.dumps({"balance": "banking-agent"}),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # mlflow models serve execs `uvicorn` from PATH
    })
    train_args = (["--classifier", args.classifier] if args.classifier else []) + (
        ["--features", args.features] if args.features else [])
    queries, texts = prepare(work, env, args.train_split, train_args)

    p_ours, p_theirs = free_port(), free_port()
    ours = start([str(BIN / "intelrouter"), "serve", "--port", str(p_ours), "--log-level", "warning"], env,
                 work / "ours.log")
    theirs = start([str(BIN / "mlflow"), "models", "serve", "-m", "models:/intelrouter@production",
                    "--env-manager", "local", "-h", "127.0.0.1", "-p", str(p_theirs), "-w", "1"], env,
                   work / "mlflow.log")
    servers = {
        "intelrouter serve": (f"http://127.0.0.1:{p_ours}/route", "router", ours),
        "mlflow models serve": (f"http://127.0.0.1:{p_theirs}/invocations", "mlflow", theirs),
    }
    if args.before:
        p_before, tree = free_port(), work / "before"
        run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before], env)
        before_env = {**env, "INTELROUTER_DATA_DIR": str(work / "data-before"), "PYTHONPATH": str(tree),
                      "INTELROUTER_DATABASE_URL": f"sqlite:///{work / 'ir-before.db'}"}
        before = start([sys.executable, "-m", "cli", "serve", "--port", str(p_before), "--log-level", "warning"],
                       before_env, work / "before.log", cwd=tree)
        servers[f"{args.before} (before)"] = (f"http://127.0.0.1:{p_before}/route", "router", before)
    results: dict[tuple[str, int], list[dict]] = {}
    served: dict[str, int] = {}
    load_before = os.getloadavg()[0]
    try:
        for url, _, proc in servers.values():
            wait_http(url.rsplit("/", 1)[0] + "/health", proc)
        compared, mismatches, worst = same_predictions(servers["intelrouter serve"][0],
                                                       servers["mlflow models serve"][0], texts[:500])
        served["intelrouter serve"] = compared
        for name, (url, fmt, _) in servers.items():  # warm-up, not in the table
            warm = wrk(url, 8, 3, queries, fmt)
            if fmt == "router":
                served[name] = served.get(name, 0) + warm["requests"]
        names = list(servers)
        for conns in [int(c) for c in args.conns.split(",")]:
            for r in range(args.rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    url, fmt, proc = servers[name]
                    cpu0 = cpu_seconds(proc.pid)
                    res = wrk(url, conns, args.duration, queries, fmt)
                    res["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / max(res["requests"], 1) * 1e6
                    results.setdefault((name, conns), []).append(res)
                    if fmt == "router":
                        served[name] = served.get(name, 0) + res["requests"]
                    print(f"{name:20s} c={conns:<3d} {res['rps']:8.0f} req/s  p50 {res['p50_us'] / 1000:7.1f} ms"
                          f"  p99 {res['p99_us'] / 1000:7.1f} ms  cpu {res['cpu_us']:6.0f} us/req"
                          f"  errors {res['errors']} non2xx {res['non2xx']}",
                          file=sys.stderr)
        rss = {name: peak_rss_mb(proc.pid) for name, (_, _, proc) in servers.items()}
        load = (load_before, os.getloadavg()[0])
    finally:
        for _, _, proc in servers.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _, _, proc in servers.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if args.before:
        run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "before")], env)
    logged = {}
    for name, db_file in (("intelrouter serve", "ir.db"), (f"{args.before} (before)", "ir-before.db")):
        if (work / db_file).exists():
            with sqlite3.connect(work / db_file) as db:
                logged[name] = db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM queries").fetchone()

    print(report(results, rss, (compared, mismatches, worst), served, logged, load, args))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory kept: {work}", file=sys.stderr)


def report(results: dict, rss: dict, same: tuple[int, int, float], served: dict[str, int],
           logged: dict[str, tuple[int, int]], load: tuple[float, float], args: argparse.Namespace) -> str:
    """The markdown block."""
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_us", "p99_us", "cpu_us")}
           for k, v in results.items()}
    errs = {k: sum(r["errors"] + r["non2xx"] for r in v) for k, v in results.items()}
    conns = sorted({c for _, c in results})
    names = ["mlflow models serve", *sorted({n for n, _ in results} - {"mlflow models serve", "intelrouter serve"}),
             "intelrouter serve"]
    before = names[1] if len(names) == 3 else None
    extra = " --before " + args.before if args.before else ""
    lines = [
        f"`python bench/serve_speed.py --duration {args.duration} --rounds {args.rounds} --conns {args.conns}{extra}` "
        f"(wrk -t1, median of {args.rounds} interleaved runs of {args.duration} s; servers on core 0, wrk on core 1)",
        "",
        "| connections | server | req/s | p50 ms | p99 ms | errors | ratio (req/s) | server CPU µs/req | ratio (CPU) |"
        + (" after / before (req/s) |" if before else ""),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if before else ""),
    ]
    for c in conns:
        anchor, anchor_cpu = med[("mlflow models serve", c)]["rps"], med[("mlflow models serve", c)]["cpu_us"]
        for name in names:
            m = med[(name, c)]
            row = (f"| {c} | {name} | {m['rps']:.0f} | {m['p50_us'] / 1000:.1f} | {m['p99_us'] / 1000:.1f} | "
                   f"{errs[(name, c)]} | {m['rps'] / anchor:.1f}× | {m['cpu_us']:.0f} | "
                   f"{anchor_cpu / m['cpu_us']:.1f}× |")
            if before:
                ratio = m["rps"] / med[(before, c)]["rps"]
                row += f" {ratio:.3f} |" if name == "intelrouter serve" else " |"
            lines.append(row)
    compared, mismatches, worst = same
    lines += [
        "",
        f"- peak RSS per worker: intelrouter serve {rss['intelrouter serve']:.0f} MB, "
        f"mlflow models serve {rss['mlflow models serve']:.0f} MB",
        f"- predictions: {compared} CLINC150 test queries, {mismatches} differ in label/top_label/uncertain from "
        f"`mlflow models serve` of the same registered version; max |confidence difference| {worst:.1e}",
        f"- machine load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} on 2 cores "
        "(other jobs share the machine; the interleaving spreads their noise over every server)",
    ]
    for name, (rows, distinct) in logged.items():
        lines.append(f"- logging on ({name}): {rows} `queries` rows ({distinct} distinct ids) for "
                     f"{served.get(name, 0)} answers counted by the clients (rows >= answers: wrk does not count "
                     "responses still in flight when a run ends)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
