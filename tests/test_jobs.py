"""The training job against a real MLflow SQLite tracking store: what it logs, registers, marks and refuses."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from training_support import (  # noqa: F401 - shared_tracking_uri is a fixture
    age_rows,
    cli_env,
    on_shared_tracking,
    seed_ml_data,
    shared_tracking_uri,
    synthetic_rows,
    write_jsonl,
)

from devservers.ports import free_port
from intelrouter import lifecycle, registry, store
from intelrouter.capture import log_queries
from intelrouter.config import load_settings
from intelrouter.errors import InputError, InsufficientDataError, RegistryError
from intelrouter.jobs import train
from intelrouter.loading import load_router

INTENTS = {"weather", "book_flight", "play_music", "set_alarm"}


@pytest.fixture
def settings(settings, shared_tracking_uri: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201, F811
    """A fresh database, and a model and experiment of its own on one shared tracking store."""
    return on_shared_tracking(monkeypatch, shared_tracking_uri)


def _trained_versions(settings) -> dict[str | None, int]:  # noqa: ANN001
    t = store.ml_data
    with store.connect(settings) as conn:
        rows = conn.execute(select(t.c.trained_version)).scalars().all()
    return {v: rows.count(v) for v in set(rows)}


def _run(settings, run_id: str):  # noqa: ANN001, ANN202
    return registry.get_client(settings).get_run(run_id)


def test_first_version_is_logged_registered_and_marks_its_rows(settings, tmp_path: Path) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(40, oos=20))
    age_rows(settings, "paris", days=60)  # outside the last-30-days slice
    # a routed query with a label ml_data never had: training must not see it
    log_queries(settings, [{"text": "what is the weather in paris", "predicted_label": "from_queries",
                            "confidence": 0.99}])
    result = train(settings, threshold_policy="balanced")

    assert (result.semver, result.version, result.lifecycle) == ("1.0.0", "1", "production")
    assert result.gate.passed and str(registry.alias_version(settings, "production").version) == "1"
    run = _run(settings, result.run_id)
    assert re.fullmatch(r"v\d{8}_\d{6}", run.info.run_name)
    tags = run.data.tags
    assert tags["semver"] == "1.0.0" and tags["lifecycle"] == "production" and tags["gate"] == "passed"
    assert re.fullmatch(r"[0-9a-f]{64}", tags["data_digest"]) and tags["code_version"]
    params = run.data.params
    assert params["threshold_policy_used"] == "balanced" and params["test_size"] == "0.2"
    assert params["random_state"] == "42" and params["min_samples"] == "50" and params["classifier"] == "lr"
    metrics = run.data.metrics
    for key in ("accuracy", "macro_f1", "weighted_f1", "f1_weather", "coverage", "answered_accuracy",
                "uncertain_rate", "ece", "oos_recall"):
        assert f"test_{key}" in metrics, key
    assert metrics["test_accuracy"] > 0.9 and metrics["recent_accuracy"] > 0.9
    assert 0 < metrics["recent_rows"] < metrics["test_rows"]  # the aged rows left the recent slice
    artifacts = {f.path for d in ("plots", "evaluation") for f in registry.get_client(settings).list_artifacts(
        result.run_id, d)}
    assert artifacts == {"plots/confusion_matrix.png", "plots/risk_coverage.png", "plots/reliability.png",
                         "evaluation/classification_report.txt", "evaluation/misclassified.csv"}
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.name == "ml_data" and dataset.digest == tags["data_digest"][:32]
    assert json.loads(dataset.profile)["num_rows"] == 180
    assert json.loads(dataset.source)["tags"]["label_distribution"] == {
        "weather": 40, "book_flight": 40, "play_music": 40, "set_alarm": 40, "oos": 20}

    mv = registry.get_version(settings, "1")
    assert mv.tags["semver"] == "1.0.0" and mv.tags["lifecycle"] == "production"
    assert float(mv.tags["threshold"]) == pytest.approx(result.threshold)
    router = load_router(f"models:/{settings.model_name}@production", settings.tracking_uri)
    assert set(router.labels) == INTENTS  # no "oos" class, nothing from `queries`
    assert router.threshold == pytest.approx(result.threshold)
    assert router.predict_one("will it rain in tokyo tomorrow").top_label == "weather"

    exp = registry.get_client(settings).get_experiment(run.info.experiment_id)
    assert exp.artifact_location == settings.artifacts_dir.as_uri()
    report = json.loads(result.report_path.read_text())
    assert result.report_path.name == "training-router-v1.0.0.json"
    assert report["semver"] == "1.0.0" and report["gate"]["passed"] and report["data"]["marked_rows"] == 180
    # every row the version used is marked, held-out ones too: none stays "unused" to re-trigger training
    assert int(params["train_rows"]) < 180 and int(params["test_rows"]) > 0 and int(params["val_rows"]) > 0
    assert _trained_versions(settings) == {"1.0.0": 180} and result.marked_rows == 180


def test_retrain_is_a_minor_bump_canary_and_marks_only_new_rows(settings) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(30, seed=1))
    first = train(settings)
    new_rows = seed_ml_data(settings, synthetic_rows(15, seed=2))
    second = train(settings)
    assert (second.semver, second.lifecycle) == ("1.1.0", "canary")
    assert str(registry.alias_version(settings, "staging").version) == second.version
    assert str(registry.alias_version(settings, "production").version) == first.version
    assert registry.canary_share(settings) == pytest.approx(settings.canary_share)
    counts = _trained_versions(settings)
    assert counts["1.0.0"] == first.marked_rows == 120  # rows keep the version that first used them
    assert counts["1.1.0"] == second.marked_rows == new_rows > 0 and None not in counts
    third = train(settings, features={"stems": False})
    assert third.semver == "2.0.0"  # a new feature set is a major version


def _splits_of_run(settings, run_id: str) -> dict[str, list[int]]:  # noqa: ANN001
    return json.loads(Path(registry.get_client(settings).download_artifacts(run_id, "splits.json")).read_text())


def _stored_splits(settings) -> dict[int, str]:  # noqa: ANN001
    with store.connect(settings) as conn:
        return dict(conn.execute(select(store.ml_data.c.id, store.ml_data.c.split)).all())


def test_the_gate_compares_on_rows_no_version_trained_on(settings) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(40, seed=11))
    first = train(settings)
    before = _stored_splits(settings)
    seed_ml_data(settings, synthetic_rows(40, seed=12))
    second = train(settings)
    v1, v2 = _splits_of_run(settings, first.run_id), _splits_of_run(settings, second.run_id)
    assert v2["test"] and not set(v2["test"]) & (set(v1["train"]) | set(v1["val"]))  # production never saw them
    assert set(v1["test"]) <= set(v2["test"])  # yesterday's test rows are still test rows
    after = _stored_splits(settings)
    assert all(after[row_id] == split for row_id, split in before.items())  # no split was ever drawn again
    run = _run(settings, second.run_id)
    assert run.data.params["comparison_rows"] == str(len(v2["test"]))
    assert re.fullmatch(r"[0-9a-f]{64}", run.data.tags["comparison_digest"])


def test_regression_is_rejected_and_moves_no_alias(settings, tmp_path: Path) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(40, seed=3))
    first = train(settings)
    good_test = synthetic_rows(20, seed=4, split="test")
    bad_train = synthetic_rows(40, seed=5, split="train")
    labels = sorted(INTENTS)
    random.Random(0).shuffle(bad_train)
    for i, row in enumerate(bad_train):
        row["label"] = labels[i % 4]  # labels unrelated to the texts
    export = write_jsonl(tmp_path / "export.jsonl", bad_train + good_test)
    before = _trained_versions(settings)
    result = train(settings, source=str(export))
    assert not result.gate.passed and result.lifecycle == "rejected"
    assert any("regression" in r for r in result.gate.reasons)
    assert str(registry.alias_version(settings, "production").version) == first.version
    assert registry.alias_version(settings, "staging") is None
    mv = registry.get_version(settings, result.version)
    assert mv.tags["lifecycle"] == "rejected" and "regression" in mv.tags["rejected_reason"]
    assert _run(settings, result.run_id).data.params["test_rows"] == str(len(good_test))
    assert _trained_versions(settings) == before  # a rejected version uses up no samples


def test_too_few_samples_is_one_line_and_exit_1(settings) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(5))
    with pytest.raises(InsufficientDataError, match=r"^Insufficient training data: 20 samples, need at least 50$"):
        train(settings)
    done = subprocess.run(["intelrouter", "train"], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: Insufficient training data: 20 samples, need at least 50"
    assert registry.list_model_versions(settings) == []


def test_bad_source_and_options_are_input_errors(settings, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="no such file"):
        train(settings, source=str(tmp_path / "missing.jsonl"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "hi", "label": "a"}\nnot json\n')
    with pytest.raises(InputError, match="broken.jsonl:2: not valid JSON"):
        train(settings, source=str(broken))
    with pytest.raises(InputError, match="bad training option threshold_policy: .*'fixed', 'coverage'"):
        train(settings, threshold_policy="strict")
    with pytest.raises(InputError, match="bad training option classifier: .*'lr', 'lr-lbfgs'"):
        train(settings, classifier="forest")


def test_unreachable_tracking_server_fails_cleanly(settings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(20))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = load_settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RegistryError, match="unreachable"):
        train(dead)
    assert _trained_versions(settings) == {None: 80}


def test_cli_train_models_promote_rollback(settings, capsys: pytest.CaptureFixture, monkeypatch) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(30, seed=6))
    # the first command in a real process; the rest through the same entry point in-process (imports are slow)
    first = subprocess.run(["intelrouter", "train", "--threshold-policy", "coverage"], env=cli_env(),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "trained v1.0.0 (model version 1" in first.stdout and "gate passed" in first.stdout

    def cli(*args: str) -> tuple[int, str, str]:
        from cli.main import main

        monkeypatch.setattr(sys, "argv", ["intelrouter", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    seed_ml_data(settings, synthetic_rows(10, seed=7))
    code, out, _ = cli("train", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["lifecycle"] == "canary"
    listing = cli("models")[1]
    assert re.search(r"2\s+1\.1\.0\s+canary\s+@staging", listing)
    assert re.search(r"1\s+1\.0\.0\s+production\s+@production", listing)
    assert cli("promote", "2", "--to", "production")[1].strip() == "@production -> version 2 (v1.1.0)"
    assert cli("rollback")[1].strip() == "@production -> version 1 (v1.0.0)"
    code, _, err = cli("promote", "7", "--to", "production")
    assert code == 1
    assert err.strip() == f"error: model {settings.model_name} has no version 7: see `intelrouter models`"
    assert str(registry.alias_version(settings, "production").version) == "1"
    code, out, err = cli("evaluate", "--model-uri", f"models:/{settings.model_name}/2")
    assert code == 0, err
    assert "candidate_test: accuracy" in out and "vs production" in out


# --- one training at a time, retries, crashes --------------------------------------------------------------------


class Killed(BaseException):
    """The process died here: raised past every `except Exception`, as SIGKILL would stop it."""


def _die(monkeypatch: pytest.MonkeyPatch, module, name: str, after: bool = True, times: int = 1,  # noqa: ANN001
         error: BaseException | None = None) -> list[int]:
    """Make `module.name` kill the process (or raise `error`) right after (or before) its real work, `times` times."""
    real, calls = getattr(module, name), []

    def dying(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) > times:
            return real(*args, **kwargs)
        out = real(*args, **kwargs) if after else None
        raise error or Killed(f"died {'after' if after else 'before'} {name}")
        return out  # pragma: no cover

    monkeypatch.setattr(module, name, dying)
    return calls


def _waiting(settings) -> int:  # noqa: ANN001
    with store.connect(settings) as conn:
        return store.samples_waiting(conn)


def test_two_trainings_started_together_take_turns(settings) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(30, seed=21))
    env = cli_env(INTELROUTER_TRAINING_LOCK_WAIT_SECONDS="600")
    # the 30-day and the weekly schedule fire at the same minute: two processes, one database, one registry
    procs = [subprocess.Popen(["intelrouter", "train", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    results = sorted((json.loads(out.strip().splitlines()[-1]) for out, _ in outs), key=lambda r: r["semver"])
    assert [(r["semver"], r["version"], r["lifecycle"]) for r in results] == [
        ("1.0.0", "1", "production"), ("1.1.0", "2", "canary")]  # never two 1.0.0
    assert [mv.tags["semver"] for mv in registry.list_model_versions(settings)] == ["1.1.0", "1.0.0"]
    assert registry.where_aliases_point(settings) == {"production": "1", "staging": "2", "canary_share": 0.1}
    assert _trained_versions(settings) == {"1.0.0": 120}  # the second one found every row used already


def test_a_retry_after_registering_resumes_instead_of_training_again(settings, monkeypatch) -> None:  # noqa: ANN001
    from intelrouter import jobs

    seed_ml_data(settings, synthetic_rows(30, seed=22))
    # the tracking server goes away right after the version was registered: Prefect retries the task
    _die(monkeypatch, lifecycle, "apply_gate", after=False, error=RegistryError("model registry is unreachable"))
    with pytest.raises(RegistryError, match="unreachable"):
        train(settings, job_key="task-run-1")
    assert [mv.tags["lifecycle"] for mv in registry.list_model_versions(settings)] == ["testing"]
    assert _trained_versions(settings) == {"1.0.0": 120}  # marked before the move: they go with it
    fits = _die(monkeypatch, jobs, "fit_router", after=False, times=10**6)  # the retry must not fit again

    retry = train(settings, job_key="task-run-1")
    assert not fits and retry.resumed
    assert (retry.version, retry.semver, retry.lifecycle, retry.gate.passed) == ("1", "1.0.0", "production", True)
    assert len(registry.list_model_versions(settings)) == 1
    assert registry.where_aliases_point(settings)["production"] == "1"
    run = _run(settings, retry.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["lifecycle"] == "production"
    assert run.data.tags["model_version"] == "1" and retry.marked_rows == 120 and _trained_versions(settings) == {
        "1.0.0": 120}
    report = json.loads(retry.report_path.read_text())
    assert report["version"] == "1" and report["data"]["train"] > 0 and report["info"]["resumed"] is True
    assert train(settings, job_key="task-run-1").version == "1"  # a third try still trains nothing


def test_a_store_failure_while_marking_retries_into_one_version(settings, monkeypatch) -> None:  # noqa: ANN001
    from intelrouter import jobs
    from intelrouter.errors import StoreError

    seed_ml_data(settings, synthetic_rows(30, seed=23))
    _die(monkeypatch, jobs, "mark_trained", after=False, error=StoreError("database is unreachable"))
    with pytest.raises(StoreError):
        train(settings, job_key="task-run-2")
    assert registry.list_model_versions(settings) == [] and _waiting(settings) == 120  # nothing registered yet
    retry = train(settings, job_key="task-run-2")  # before registering a retry may train again: once
    assert not retry.resumed and [str(mv.version) for mv in registry.list_model_versions(settings)] == ["1"]
    assert _trained_versions(settings) == {"1.0.0": 120}


def test_killed_after_the_alias_move_leaves_no_row_to_retrain_on(settings, monkeypatch) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(30, seed=24))
    _die(monkeypatch, lifecycle, "apply_gate")  # @production moved, then the process died
    with pytest.raises(Killed):
        train(settings)
    assert registry.where_aliases_point(settings)["production"] == "1"
    assert _waiting(settings) == 0  # the weekly rule sees nothing new: no retrain on the same rows


def test_killed_before_registering_or_moving_is_undone_by_the_next_start(settings, monkeypatch) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(30, seed=25))
    with monkeypatch.context() as m:
        _die(m, lifecycle, "register", after=False)  # rows marked 1.0.0, no version carries them
        with pytest.raises(Killed):
            train(settings)
    assert _trained_versions(settings) == {"1.0.0": 120} and registry.list_model_versions(settings) == []
    with monkeypatch.context() as m:
        _die(m, lifecycle, "apply_gate", after=False)  # registered, never moved
        with pytest.raises(Killed):
            train(settings)
    assert [mv.tags["lifecycle"] for mv in registry.list_model_versions(settings)] == ["testing"]
    result = train(settings)  # the next start: the interrupted version is rejected, its rows released and re-used
    assert (result.version, result.semver, result.lifecycle, result.marked_rows) == ("2", "1.1.0", "production", 120)
    first = registry.get_version(settings, "1")
    assert first.tags["lifecycle"] == "rejected" and "interrupted" in first.tags["rejected_reason"]
    assert _trained_versions(settings) == {"1.1.0": 120}


def test_a_rolled_back_canary_gives_its_rows_back(settings) -> None:  # noqa: ANN001
    from intelrouter import canary

    seed_ml_data(settings, synthetic_rows(30, seed=26))
    train(settings)
    new_rows = seed_ml_data(settings, synthetic_rows(12, seed=27))
    second = train(settings)
    assert second.lifecycle == "canary" and _waiting(settings) == 0
    state = canary.read_state(settings)
    assert canary.apply(settings, state, canary.Decision("rollback", "worse online"))
    assert registry.get_version(settings, second.version).tags["lifecycle"] == "rejected"
    assert _waiting(settings) == new_rows  # used only by the rolled-back canary: unused again
    third = train(settings)
    assert third.semver == "1.2.0" and third.marked_rows == new_rows and _waiting(settings) == 0


def _served_by_production(settings, texts: list[str], tag: str, label: str | None = None) -> None:  # noqa: ANN001
    """Recent queries @production v1 answered: its own answers, or (label) a log that says it answered `label`."""
    from datetime import timedelta

    router = load_router(f"models:/{settings.model_name}/1", settings.tracking_uri)
    when = store.utcnow() - timedelta(hours=1)
    log_queries(settings, [{"id": f"{tag}-{i}", "text": t, "predicted_label": label or p.label,
                            "top_label": label or p.top_label, "confidence": 0.99 if label else p.confidence,
                            "uncertain": False if label else p.uncertain, "model_version": "1",
                            "variant": "production", "created_at": when}
                           for i, (t, p) in enumerate(zip(texts, router.predict(texts), strict=True))])


def test_a_candidate_is_replayed_on_recent_traffic_before_its_canary_and_held_by_the_limits(  # noqa: ANN001
        settings, monkeypatch) -> None:
    seed_ml_data(settings, synthetic_rows(30, seed=31))
    first = train(settings)
    assert first.shadow["status"] == "skipped"  # a first model has no production to replay against
    assert "label_counts" in load_router(f"models:/{settings.model_name}/1", settings.tracking_uri).info[
        "drift_reference"]
    _served_by_production(settings, [r["text"] for r in synthetic_rows(40, seed=32)], "week")
    seed_ml_data(settings, synthetic_rows(15, seed=33))
    judged = load_settings(shadow_min_queries=100)  # 160 recent queries: enough for this test's limits
    second = train(judged)
    assert (second.lifecycle, second.shadow["status"]) == ("canary", "passed")
    tags = registry.get_version(settings, second.version).tags
    assert tags["shadow"] == "passed" and tags["shadow_rows"] == "160" and tags["shadow_logged_rows"] == "160"
    assert float(tags["shadow_agreement"]) >= judged.shadow_min_agreement
    run = _run(settings, second.run_id)
    assert run.data.metrics["shadow_agreement"] == pytest.approx(float(tags["shadow_agreement"]), abs=1e-4)
    assert run.data.tags["shadow"] == "passed"
    logged = json.loads(Path(registry.get_client(settings).download_artifacts(second.run_id, "shadow.json"))
                        .read_text())
    assert logged["report"]["rows"] == 160 and logged["production_version"] == "1"

    # a week in which the log says production answered every weather question with set_alarm: the candidate
    # disagrees with production on much of the recent traffic, but expects to be right more often: not held
    weather = [r["text"] for r in synthetic_rows(80, seed=34) if r["label"] == "weather"]
    _served_by_production(settings, weather, "odd", label="set_alarm")
    seed_ml_data(settings, synthetic_rows(10, seed=35))
    third = train(judged)
    tags = registry.get_version(settings, third.version).tags
    assert float(tags["shadow_agreement"]) < judged.shadow_min_agreement
    assert float(tags["shadow_estimate_change"]) > 0 and (third.lifecycle, tags["shadow"]) == ("canary", "passed")

    # a limit that holds any candidate (what a hold does is this test's subject; when one holds: test_shadow.py)
    from intelrouter import rollout

    real_limits = rollout.limits
    monkeypatch.setattr(rollout, "limits", lambda report, rules: ["held by the test's limit", *real_limits(
        report, rules)])
    before = _trained_versions(settings)
    seed_ml_data(settings, synthetic_rows(10, seed=36))
    held = train(judged)
    assert held.gate.passed and held.lifecycle == "testing" and held.shadow["status"] == "held"
    mv = registry.get_version(settings, held.version)
    assert mv.tags["lifecycle"] == "testing" and mv.tags["hold_reasons"].startswith("held by the test's limit")
    assert mv.tags["shadow"] == "held" and mv.tags["shadow_reasons"] == mv.tags["hold_reasons"]
    assert str(registry.alias_version(settings, "staging").version) == third.version  # the canary runs on
    counts = _trained_versions(settings)  # a held version uses up no samples: the new rows still wait
    assert held.marked_rows == 0 and held.semver not in counts and counts[None] > 0
    assert all(counts[v] == n for v, n in before.items() if v is not None)
    report = json.loads(held.report_path.read_text())
    assert report["shadow"]["status"] == "held" and "drift_reference" not in report["info"]
