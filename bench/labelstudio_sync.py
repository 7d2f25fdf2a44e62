"""Bench: push 10 000 review tasks with predictions and pull 10 000 annotations against a real Label Studio.

Run: .venv/bin/python bench/labelstudio_sync.py [--tasks 10000] [--rounds 3] [--database-url URL]
(Label Studio from $LABEL_STUDIO_VENV, default .venv-labelstudio: run `bash .ci/labelstudio.sh` once.)
Starts its own Label Studio 1.23 (devservers/labelstudio.py) on a copy of the pre-migrated data dir, trains and
registers a CLINC150 model (the version that "answered" the queries: each task carries its top 3 suggestions),
seeds CLINC150 queries as needs-review, and times only `review.push` and `review.pull`. Anchors, same run, same
server: the raw single-POST import of the same tasks, and the raw listing of the same annotated tasks. Also timed
apart: the suggestions alone (loading the version, scoring every text), the part of a push they add.
Prints a markdown block for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select, update

from devservers.labelstudio import TOKEN, LabelStudioServer
from intelrouter import capture, jobs, review_project, review_pull, review_push, store
from intelrouter.config import Settings, load_settings
from intelrouter.groundtruth import insert_labels
from intelrouter.labelstudio import LabelStudioClient
from intelrouter.review_screen import Screen

REPO = Path(__file__).resolve().parents[1]

DATASET = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"


def train_model(settings: Settings, per_label: int) -> str:
    """Register a model trained on `per_label` CLINC150 training rows per intent; returns its version."""
    rows = json.loads(DATASET.read_text())["train"]
    taken: dict[str, int] = {}
    picked = []
    for text, label in rows:
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            picked.append({"text": text, "label": label})
    with store.connect(settings) as conn:
        insert_labels(conn, picked, "import", shares=settings.split_shares)
    return str(jobs.train(settings).version)


def seed(settings: Settings, n: int, version: str) -> list[str]:
    """n needs-review queries from CLINC150: real texts, the true intent as the model's guess 70 % of the time."""
    rows = json.loads(DATASET.read_text())["test"]
    labels = sorted({label for _, label in rows})
    rng = random.Random(42)
    records = []
    for i in range(n):
        text, label = rows[i % len(rows)]
        guess = label if rng.random() < 0.7 else rng.choice(labels)
        records.append({"id": str(uuid.uuid4()), "text": text, "language": "en", "predicted_label": guess,
                        "confidence": round(rng.uniform(0.05, 0.84), 4), "model_version": version})
    capture.log_queries(settings, records)
    q = store.queries
    with store.connect(settings) as conn:
        conn.execute(update(q).values(review_status=store.NEEDS_REVIEW, review_priority=2))
        conn.execute(update(q).where(q.c.confidence >= settings.review_threshold).values(review_priority=5))
    return [r["id"] for r in records]


def annotated_copy(settings: Settings, ls: LabelStudioClient, project_id: int, batch: int = 2000) -> int:
    """Import every needs-review query again, this time with a reviewer's annotation, and record the task ids
    as if pushed: the pull then has 10 000 real answers to fetch (Label Studio has no bulk-annotate call)."""
    rng = random.Random(7)
    with store.connect(settings) as conn:
        rows = review_push._select_for_push(conn, project_id, None)
    screen = Screen(settings)  # not prepared: the stored guess only, the pull bench needs no suggestions
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        tasks = []
        for row in chunk:
            task = review_push._task(row, screen)
            roll = rng.random()
            if roll < 0.1:
                task["annotations"] = [{"result": [], "was_cancelled": True}]
            else:
                label = review_project.NONE_CHOICE if roll < 0.15 else (row.top_label if roll < 0.8 else "translate")
                task["annotations"] = [{"result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                                    "value": {"choices": [label]}}]}]
            tasks.append(task)
        ids = ls.import_tasks(project_id, tasks)
        review_push._record_intent(settings, project_id, chunk)
        review_push._record_pushed(settings, project_id, [(row.id, tid) for row, tid in zip(chunk, ids, strict=True)])
    return len(rows)


def main() -> None:
    """Run the bench and print the markdown block."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved push / raw-import rounds")
    parser.add_argument("--per-label", type=int, default=100, help="CLINC150 rows per intent the model is fit on")
    args = parser.parse_args()
    n = args.tasks
    root = Path(tempfile.mkdtemp(prefix="intelrouter-lsbench-"))
    server = LabelStudioServer.from_template(root)
    server.start()
    try:
        settings = load_settings(
            data_dir=root / "data", database_url=args.database_url, mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
            label_studio_url=server.url, label_studio_api_key=TOKEN,
        )
        version = train_model(settings, args.per_label)
        seed(settings, n, version)
        ls = LabelStudioClient(server.url, TOKEN)
        config = ls.get_project(review_project.setup_project(settings, title="bench setup"))["label_config"]
        with store.connect(settings) as conn:  # the anchor imports exactly what the push sends
            rows = review_push._select_for_push(conn, -1, None)
        t_screen = []
        for _ in range(2):  # the suggestions alone: load the version, score every text (as one push does)
            t = time.perf_counter()
            screen = Screen(settings)
            for start in range(0, n, review_project.BATCH_SIZE):
                screen.prepare(rows[start : start + review_project.BATCH_SIZE])
            t_screen.append(time.perf_counter() - t)
        screen.prepare(rows)
        payload = [review_push._task(row, screen) for row in rows]
        assert all(len(task["data"]["suggestions"]) == 3 for task in payload)

        # Interleaved rounds (ours, raw, raw, ours, ...) on a shared, noisy machine; each into a fresh project.
        t_push, t_raw_import = [], []
        for r in range(args.rounds):
            for kind in ("ours", "raw") if r % 2 == 0 else ("raw", "ours"):
                project_id = ls.create_project(f"bench {kind} {r}", config)["id"]
                t = time.perf_counter()
                if kind == "ours":
                    assert review_push.push(settings, project_id=project_id).pushed == n
                    t_push.append(time.perf_counter() - t)
                    pushed_project = project_id
                else:
                    ls.request("POST", f"/api/projects/{project_id}/import", json_body=payload, idempotent=False)
                    t_raw_import.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert review_push.push(settings, project_id=pushed_project).pushed == 0
        t_repush = time.perf_counter() - t

        pull_project = ls.create_project("bench pull", config)["id"]
        annotated_copy(settings, ls, pull_project)
        t_raw_list = []
        for _ in range(2):  # before and after the pull: Label Studio's own cost of serving the answers
            t = time.perf_counter()
            assert sum(len(page) for page in ls.annotated_tasks(pull_project)) == n
            t_raw_list.append(time.perf_counter() - t)
            if len(t_raw_list) == 1:
                t = time.perf_counter()
                pulled = review_pull.pull(settings, project_id=pull_project)
                t_pull = time.perf_counter() - t
                assert pulled.written == n, pulled
        t = time.perf_counter()
        again = review_pull.pull(settings, project_id=pull_project)
        t_repull = time.perf_counter() - t
        assert again.written == 0 and again.unchanged == n, again
        with store.connect(settings) as conn:
            written = conn.execute(select(func.count()).select_from(store.ml_data)
                                   .where(store.ml_data.c.source == "label-studio")).scalar()
        assert written == pulled.approved, (written, pulled)
        ls.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    db = "PostgreSQL" if args.database_url else "SQLite"
    push_s, raw_s, list_s = statistics.median(t_push), statistics.median(t_raw_import), statistics.mean(t_raw_list)
    screen_s = min(t_screen)
    print(f"""## Human review (Label Studio)

Command: `.venv/bin/python bench/labelstudio_sync.py --tasks {n} --rounds {args.rounds}`
(starts its own Label Studio 1.23.2 from `$LABEL_STUDIO_VENV`, default `.venv-labelstudio`, on a copy of the
pre-migrated SQLite data dir; IntelRouter store on {db}; CLINC150 texts; batches of {review_project.BATCH_SIZE}; push
and raw import interleaved, each into a fresh project, medians of {args.rounds}).

| measure | IntelRouter | anchor | ratio |
|---|---:|---:|---:|
| push {n:,} tasks with predictions and top-3 suggestions | {push_s:.1f} s ({n / push_s:,.0f} tasks/s) \
| raw single-POST import of the same tasks {raw_s:.1f} s | {push_s / raw_s:.2f}× |
| of which the suggestions (load the version, score {n:,} texts) | {screen_s:.1f} s | push {push_s:.1f} s \
| {screen_s / push_s:.2f}× |
| pull {n:,} annotations | {t_pull:.1f} s ({n / t_pull:,.0f} answers/s) \
| raw listing of the same annotated tasks {list_s:.1f} s | {t_pull / list_s:.2f}× |
| pull vs the import anchor | {t_pull:.1f} s | raw single-POST import {raw_s:.1f} s | {t_pull / raw_s:.2f}× |
| re-push (nothing to send) | {t_repush:.2f} s | | |
| re-pull (nothing new: {n:,} answers re-read and skipped) | {t_repull:.1f} s | | |

- Push rounds: {", ".join(f"{x:.1f}" for x in t_push)} s; raw imports: {", ".join(f"{x:.1f}" for x in t_raw_import)} s;
  suggestions alone: {", ".join(f"{x:.1f}" for x in t_screen)} s (model fit on {args.per_label} rows per intent).
- Goals push ≤ 30 s and pull ≤ 30 s: {"met" if push_s <= 30 else "NOT met"} ({push_s:.1f} s), \
{"met" if t_pull <= 30 else "NOT met"} ({t_pull:.1f} s).
- Pull outcome: {pulled.approved:,} approved ({pulled.disagreements:,} disagree with the model), \
{pulled.rejected:,} none of these, {pulled.skipped:,} skipped.
""")


if __name__ == "__main__":
    main()
