"""`intelrouter demo`, the README's first command: the whole loop on the embedded defaults, twice in a row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import wait_for
from seed_sql import SEED_SQL
from sqlalchemy import func, select

from cli.demo import sample_set, split_samples
from devservers.ports import free_port
from intelrouter import registry, store
from intelrouter.config import load_settings


def test_sample_set_covers_tiers_and_intents_without_duplicates() -> None:
    samples = sample_set()
    labels = {label for _, label in samples}
    assert {"easy", "medium", "hard"} <= labels and len(labels - {"easy", "medium", "hard"}) >= 3
    assert 300 <= len(samples) <= 500 and len({t for t, _ in samples}) == len(samples)
    seed, pool = split_samples(samples)
    assert {label for _, label in seed} == labels == {label for _, label in pool}
    assert split_samples(samples) == (seed, pool)  # stable: a re-run seeds the same rows


def _demo(data_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "PREFECT_", "MLFLOW_TRACKING"))}
    env.update({"INTELROUTER_DATA_DIR": str(data_dir), "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "cli", "demo"], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.embedded
def test_demo_runs_the_loop_twice_in_a_row(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    first = _demo(data_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "trained v1.0.0 -> production" in first.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{data_dir.resolve() / 'mlflow.db'}" in first.stdout
    assert "Traceback" not in first.stderr
    second = _demo(data_dir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "@production is already version" in second.stdout

    settings = load_settings(data_dir=data_dir, database_url=None, mlflow_tracking_uri=None)
    logs = settings.logs_dir
    runs = [json.loads(p.read_text()) for p in sorted(logs.glob("demo-*.json"))]
    assert len(runs) == 2
    assert runs[0]["seeded"] == len(split_samples(sample_set())[0]) and runs[1]["seeded"] == 0
    assert [v["semver"] for r in runs for v in r["versions"]] == ["1.0.0", "1.1.0", "1.2.0"]
    assert all(v["gate_passed"] is not None for r in runs for v in r["versions"])

    with store.connect(settings) as conn:
        queries = conn.execute(select(func.count()).select_from(store.queries)).scalar()
        by_source = dict(conn.execute(select(store.ml_data.c.source, func.count())
                                      .group_by(store.ml_data.c.source)).all())
        distinct_texts = conn.execute(select(func.count(func.distinct(store.ml_data.c.text)))
                                      .where(store.ml_data.c.source == "import")).scalar()
        untriaged_left = conn.execute(select(func.count()).select_from(store.queries)
                                      .where(store.queries.c.review_status == store.PENDING)).scalar()
    assert queries == sum(r["routed"] for r in runs)  # every routed answer logged once
    assert by_source["import"] == distinct_texts == runs[0]["seeded"]  # seeding twice added nothing
    assert by_source["feedback"] == sum(r["feedback"] for r in runs)
    assert untriaged_left < queries  # the capture flow triaged the traffic

    # the canary was judged: each decision logged, and the registry agrees with the last one
    decisions = [d["action"] for r in runs for d in r["canary"]]
    assert decisions and set(decisions) <= {"raise", "promote", "rollback", "wait"}
    for r in runs:
        for d in r["canary"]:
            assert Path(d["path"]).is_file()
    versions = registry.describe_versions(settings)
    assert len(versions) == 3
    production = registry.alias_version(settings, "production")
    assert production is not None
    if runs[1]["canary"][-1]["action"] == "promote":
        assert str(production.version) == runs[1]["versions"][-1]["version"]
    for semver in ("1.0.0", "1.1.0", "1.2.0"):
        assert (logs / f"training-router-v{semver}.json").is_file()
    assert list(logs.glob("monitoring-*.json")) and list(logs.glob("daily-report-*.json"))

    # the seeds' SQL runs on the demo's store as written, and the registry's mirror agrees with the registry
    with store.connect(settings) as conn:
        for seed, place, sql in SEED_SQL:
            assert conn.exec_driver_sql(sql).all(), f"seed {seed}, {place}: no rows"
        mirrored = dict(conn.exec_driver_sql("SELECT version, status FROM model_versions").all())
        [active] = conn.exec_driver_sql("SELECT version FROM model_metadata WHERE is_active").scalars().all()
    assert mirrored == {v["version"]: v["lifecycle"] for v in versions}
    assert active == str(production.version)
    _serve_and_open_the_dashboard(data_dir, tmp_path, [v["semver"] for v in versions], set(decisions))


def _serve_and_open_the_dashboard(data_dir: Path, tmp_path: Path, semvers: list[str], actions: set[str]) -> None:
    """`intelrouter serve` over the demo's stores: /dashboard shows the versions, the canary's steps and the rates,
    and seed 004's NLU clients are answered on /nlu/classify."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "PREFECT_", "MLFLOW_TRACKING"))}
    env["INTELROUTER_DATA_DIR"] = str(data_dir)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        assert wait_for(ready, timeout=120) and proc.poll() is None, log.read_text()[-3000:]
        page = httpx.get(f"{base}/dashboard", timeout=60)
        assert page.status_code == 200, page.text[-2000:]
        assert all(f"v{s}" in page.text for s in semvers)  # every version, in the cards and the training history
        assert "Canary share and decisions" in page.text
        assert all(f'"name": "{a}"' in page.text for a in actions), actions  # each canary step, as markers
        assert "caller-reported (all traffic)" in page.text  # the demo's callers report what they did
        assert "caller-reported fallback rate: not measured yet" not in page.text
        answer = httpx.post(f"{base}/nlu/classify", json={"text": "pizza delivery", "phoneNumber": "test123"},
                            timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"], answer.text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_demo_refuses_a_data_dir_with_other_ground_truth(tmp_path: Path) -> None:
    from intelrouter.groundtruth import upsert_label

    data_dir = tmp_path / "real"
    real = load_settings(data_dir=data_dir, database_url=None)
    with store.connect(real) as conn:
        upsert_label(conn, query_id=None, text="book me a flight to rome", label="book_flight", source="import",
                     shares=(0.2, 0.1))
    store.dispose_engines()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTELROUTER_", "PREFECT_"))}
    out = subprocess.run([sys.executable, "-m", "cli", "demo", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: {data_dir} already holds other ground truth (labels such as 'book_flight')")
    assert not (data_dir / "mlflow.db").exists()  # nothing else was touched
