"""`intelrouter simulate`: the data cut, the traffic, the Label Studio stand-in, and short runs of the whole loop."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATASETS
from training_support import cli_env

from intelrouter import clock
from intelrouter.keys import text_key
from simulation.data import Traffic, cut, load
from simulation.people import LabelStudioStandIn
from simulation.summary import labels_to_reach, weeks


def small_dataset(path: Path, labels: int = 12) -> Path:
    """A CLINC150 slice with its splits: a few intents and out-of-scope queries (a simulation in seconds)."""
    frame = pd.read_csv(DATASETS / "clinc150" / "clinc150_full.csv")
    keep = sorted(frame.loc[frame["label"] != "oos", "label"].unique())[:labels] + ["oos"]
    frame = frame[frame["label"].isin(keep)].groupby(["label", "split"]).head(40)
    frame.to_csv(path, index=False)
    return path


def test_the_cut_is_disjoint_and_the_held_out_set_is_the_test_split(tmp_path: Path) -> None:
    name, frame, oos = load(str(small_dataset(tmp_path / "small.csv")))
    parts = cut(name, frame, oos, seed_per_label=10, teacher_share=0.5)
    assert oos == "oos" and set(parts.seed["label"].value_counts()) == {10}
    rest = frame[frame["split"] != "test"]
    assert len(parts.seed) + len(parts.teacher) + len(parts.traffic) == len(rest)  # every row in one part
    together = pd.concat([parts.seed, parts.teacher, parts.traffic])
    assert sorted(together["text"]) == sorted(rest["text"])
    assert len(parts.heldout) == (frame["split"] == "test").sum()
    assert not set(parts.heldout["text"]) & (set(parts.seed["text"]) | set(parts.traffic["text"]))


def test_traffic_repeats_questions_with_small_variations(tmp_path: Path) -> None:
    name, frame, oos = load(str(small_dataset(tmp_path / "small.csv")))
    parts = cut(name, frame, oos)
    traffic = Traffic(parts.traffic, per_day=300, start=datetime(2026, 1, 4), zipf=1.0)
    day = traffic.day(0)
    assert day == traffic.day(0) and day != traffic.day(1)  # a day is reproducible, days differ
    assert all(a.at <= b.at for a, b in zip(day, day[1:], strict=False))
    assert len({q.pool_index for q in day}) < 200  # popular questions come back
    pool = parts.traffic["text"].tolist()
    assert all(text_key(q.text) == text_key(pool[q.pool_index]) for q in day)  # varied, still the same question
    assert any(q.text != pool[q.pool_index] for q in day)


def test_the_label_studio_stand_in_serves_what_push_and_pull_read() -> None:
    ls = LabelStudioStandIn()
    with clock.simulated(datetime(2026, 1, 5, 6)):
        project = ls.create_project("p", '<View><Choice value="a"/><Choice value="b"/></View>')
        assert project["parsed_label_config"]["label"]["labels"] == ["a", "b"]
        ids = ls.import_tasks(project["id"], [{"data": {"text": "x", "query_id": "q1"}}, {"data": {"text": "y"}}])
        assert [t["id"] for page in ls.iter_tasks(project["id"]) for t in page] == ids
        assert [t["id"] for t in ls.open_tasks(project["id"])] == ids
        ls.annotate(ids[0], "b")
        answered = [t for page in ls.annotated_tasks(project["id"]) for t in page]
    assert [t["id"] for t in answered] == [ids[0]] and [t["id"] for t in ls.open_tasks(project["id"])] == [ids[1]]
    assert answered[0]["annotations"][0]["result"][0]["value"]["choices"] == ["b"]
    later = datetime(2026, 1, 5, 7)
    assert not [t for page in ls.annotated_tasks(project["id"], since=later) for t in page]


def test_the_stand_in_serves_open_tasks_by_the_order_score_as_uncertainty_sampling_does() -> None:
    ls = LabelStudioStandIn()
    with clock.simulated(datetime(2026, 1, 5, 6)):
        project = ls.create_project("p", '<View><Choice value="a"/></View>')
        ls.update_project(project["id"], sampling="Uncertainty sampling")
        scored = [{"data": {"text": t}, "predictions": [{"model_version": "review-order", "score": s, "result": []}]}
                  for t, s in (("old one-off", 1.6), ("asked often", 0.2), ("medium", 1.1))]
        first = ls.import_tasks(project["id"], scored)
        assert ls.get_project(project["id"])["model_version"] == "review-order"  # as Label Studio sets it
        later = ls.import_tasks(project["id"], [{"data": {"text": "asked today"}, "predictions": [
            {"model_version": "review-order", "score": 0.1, "result": []}]}])
        assert [t["data"]["text"] for t in ls.open_tasks(project["id"])] == [
            "asked today", "asked often", "medium", "old one-off"]  # across imports, lowest score first
        ls.update_project(project["id"], sampling="Sequential sampling")
        assert [t["id"] for t in ls.open_tasks(project["id"])] == first + later  # import order


def test_shuffled_labels_hold_inside_the_block_and_are_restored_after(settings) -> None:  # noqa: ANN001
    import numpy as np
    from sqlalchemy import select

    from intelrouter import store
    from intelrouter.groundtruth import insert_labels
    from simulation.loop import shuffled_labels

    rows = [{"text": f"question {i}", "label": f"label{i % 20}", "split": "train" if i < 180 else "test"}
            for i in range(200)]
    with store.connect(settings) as conn:
        insert_labels(conn, rows, "import", shares=settings.split_shares)

    def labels() -> dict[str, str]:
        with store.connect(settings) as conn:
            return dict(conn.execute(select(store.ml_data.c.text, store.ml_data.c.label)).all())

    before = labels()
    with shuffled_labels(settings, 0.5, np.random.default_rng(0)):
        inside = labels()
        changed = {t for t in before if inside[t] != before[t]}
        assert 60 <= len(changed) <= 90  # half of the 180 training rows, less the few that drew their own label
        assert all(int(t.split()[1]) < 180 for t in changed)  # test rows are never touched
        assert sorted(inside.values()) == sorted(before.values())  # shuffled among themselves
    assert labels() == before


def test_weeks_keep_the_state_at_their_end_and_average_their_rates() -> None:
    days = [{"day": d, "heldout_accuracy": 0.7 + d / 100, "human_labels": 10 * d, "fallback_rate": 0.2}
            for d in range(1, 10)]
    got = weeks(days)
    assert [w["week"] for w in got] == [1, 2] and got[0]["human_labels"] == 70 and got[1]["days"] == 2
    assert got[0]["fallback_rate"] == pytest.approx(0.2)
    assert labels_to_reach(days, 0.75) == 50 and labels_to_reach(days, 0.99) is None


@pytest.mark.embedded
@pytest.mark.slow
def test_a_short_simulation_of_every_policy_end_to_end(tmp_path: Path) -> None:
    data = small_dataset(tmp_path / "small.csv")
    env = cli_env(INTELROUTER_DATA_DIR=str(tmp_path / "data"), INTELROUTER_WEEKLY_TRIGGER="40",
                  INTELROUTER_MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "sim"
    done = subprocess.run([sys.executable, "-m", "cli", "simulate", "--dataset", str(data), "--days", "8",
                           "--queries-per-day", "40", "--review-budget", "8", "--output", str(out), "--json"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    policies = result["policies"]
    assert set(policies) == {"default", "seed", "random", "skyline"}
    for name, run in policies.items():
        assert [d["day"] for d in run["days"]] == list(range(1, 9)), name
        assert [w["week"] for w in run["weeks"]] == [1, 2]
        assert sum(d["queries"] for d in run["days"]) == 8 * 40
        assert run["days"][-1]["heldout_accuracy"] > 0.3
        assert len([t for t in run["trainings"] if t["trained"]]) == 2, run["trainings"]  # day 0 and day 7
    labels = {name: run["days"][-1]["human_labels"] for name, run in policies.items()}
    assert labels["skyline"] == 8 * 40 and labels["default"] <= 7 * 8 < labels["seed"]
    assert policies["skyline"]["days"][-1]["wrong_label_rate"] < 0.05
    assert {"target_heldout_accuracy", "labels_to_target", "no_wrong_decision"} <= set(result["goals"])
    assert (out / "simulation.png").stat().st_size > 10_000 and "plotly" in (out / "simulation.html").read_text()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("intelrouter-simulation").experiment_id])
    assert sorted(r.data.tags["policy"] for r in runs) == ["default", "random", "seed", "skyline"]
    history = client.get_metric_history(runs[0].info.run_id, "heldout_accuracy")
    assert [m.step for m in history] == list(range(1, 9))


def test_a_short_simulation_on_the_configured_database(settings, tmp_path: Path) -> None:  # noqa: ANN001
    """The default policy for two days on the test's database server (SQLite, or PostgreSQL in the PG pass)."""
    from simulation.loop import Options
    from simulation.run import simulate

    data = small_dataset(tmp_path / "small.csv", labels=8)
    options = Options(dataset=str(data), days=2, queries_per_day=30, review_budget=6)
    ticks: list[int] = []
    result = simulate(options, settings, ["default"], tmp_path / "sim", lambda p, n: ticks.append(n), jobs=1)
    run = result["policies"]["default"]
    assert sum(ticks) == 60 and [d["day"] for d in run["days"]] == [1, 2]
    assert run["days"][-1]["ground_truth_rows"] > len(pd.read_csv(data).query("split != 'test'")) * 0
    assert run["trainings"][0]["lifecycle"] == "production"
    if settings.db_url.startswith("postgresql"):
        assert result["policies"]["default"]["days"][0]["queries"] == 30


@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "nope"], "nope: no such dataset"),
    (["--policy", "best"], "unknown policy 'best'"),
    (["--days", "0"], "Invalid value for '--days'"),
])
def test_bad_options_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cli", "simulate", *args], capture_output=True, text=True,
                          env=cli_env(INTELROUTER_DATA_DIR=str(tmp_path)), timeout=120)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
