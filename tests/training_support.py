"""Helpers for the training, model and registry tests: a small synthetic intent set and ways to store it."""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from intelrouter import store
from intelrouter.config import telemetry_off
from intelrouter.groundtruth import insert_labels

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]

CITIES = ["paris", "london", "tokyo", "berlin", "madrid", "rome", "oslo", "lima", "cairo", "delhi", "boston"]
TEMPLATES = {
    "weather": ["what is the weather in {c}", "will it rain in {c} tomorrow", "how hot is it in {c} today",
                "is it sunny in {c}", "weather forecast for {c} please", "do i need an umbrella in {c}"],
    "book_flight": ["book a flight to {c}", "i need a plane ticket to {c}", "find me flights to {c} next week",
                    "get me on a flight to {c}", "reserve a seat on a plane to {c}", "fly me to {c} on friday"],
    "play_music": ["play some jazz from {c}", "put on music by a band from {c}", "play the {c} playlist",
                   "start my {c} songs", "i want to hear music from {c}", "shuffle songs about {c}"],
    "set_alarm": ["set an alarm for {n} am", "wake me up at {n} o'clock", "alarm at {n} pm please",
                  "remind me with an alarm at {n}", "set my alarm to {n} thirty", "create an alarm for {n}"],
}
OOS = ["who won the {c} marathon", "how do i cook rice in {c} style", "what is the capital of {c}",
       "tell me the history of {c}", "how far is the moon from {c}", "what language do they speak in {c}"]


def synthetic_rows(per_label: int = 40, oos: int = 0, seed: int = 0, split: str | None = None) -> list[dict[str, Any]]:
    """Labelled rows: `per_label` for each of four intents plus `oos` out-of-scope ones, all distinct."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for label, templates in [*TEMPLATES.items(), ("oos", OOS)]:
        want = oos if label == "oos" else per_label
        seen: set[str] = set()
        while len(seen) < want:
            text = rng.choice(templates).format(c=rng.choice(CITIES), n=rng.randint(1, 12))
            text = f"{text} {rng.choice(['', 'now', 'thanks', 'please', 'ok', 'hey', 'quickly', 'asap'])}".strip()
            text += f" #{len(seen)}" if text in seen else ""
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": label, "split": split})
    rng.shuffle(rows)
    return rows


def seed_ml_data(settings: Any, rows: Iterable[dict[str, Any]], source: str = "import") -> int:
    """Insert ground-truth rows into ml_data; returns how many were new."""
    with store.connect(settings) as conn:
        return insert_labels(conn, [dict(r) for r in rows], source, shares=settings.split_shares)


def age_rows(settings: Any, labels_like: str, days: int) -> None:
    """Move the created_at of rows whose text contains `labels_like` back by `days` days."""
    t = store.ml_data
    with store.connect(settings) as conn:
        conn.execute(update(t).where(t.c.text.contains(labels_like))
                     .values(created_at=store.utcnow() - timedelta(days=days)))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as a JSONL export."""
    with path.open("w") as fh:
        for i, row in enumerate(rows, start=1):
            fh.write(json.dumps({"id": i, **row}) + "\n")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: the current one (settings exported) with the venv on PATH."""
    env = telemetry_off(dict(os.environ))
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.update({"GIT_PYTHON_REFRESH": "quiet", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **extra})
    return env


@pytest.fixture(scope="session")
def shared_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite tracking store for a session: creating its schema costs seconds, so it is made once."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri, uri).search_experiments()
    return uri


def on_shared_tracking(monkeypatch: pytest.MonkeyPatch, tracking_uri: str) -> Any:
    """Settings (and the env the CLI sees) on a shared tracking store, with a model and experiment of their own."""
    from intelrouter.config import load_settings

    name = f"m{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("INTELROUTER_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("INTELROUTER_MODEL_NAME", name)
    monkeypatch.setenv("INTELROUTER_MLFLOW_EXPERIMENT", name)
    return load_settings()


@contextmanager
def another_training(settings: Any, hold_seconds: float = 120) -> Iterator[None]:
    """Within the block, another training holds the lifecycle lock: a thread (its own context, as another process
    would be, as far as the lock can tell) takes it before the block starts and lets go when the block ends."""
    import threading

    from intelrouter.locks import training_lock

    held, done = threading.Event(), threading.Event()

    def training() -> None:
        with training_lock(settings):
            held.set()
            done.wait(hold_seconds)

    thread = threading.Thread(target=training)
    thread.start()
    try:
        assert held.wait(30), "the other training never took the lock"
        yield
    finally:
        done.set()
        thread.join(30)
