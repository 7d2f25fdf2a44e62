"""The teacher audit: cleanlab on out-of-fold probabilities flags planted label errors, never drops a human label."""

from __future__ import annotations

import csv
import json
import random
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select
from training_support import (  # noqa: F401 - shared_tracking_uri is a fixture
    on_shared_tracking,
    shared_tracking_uri,
    synthetic_rows,
)

from intelrouter import audit, groundtruth, registry, store
from intelrouter.capture import log_queries
from intelrouter.config import Settings, load_settings
from intelrouter.data import Splits
from intelrouter.jobs import train
from intelrouter.keys import text_key
from intelrouter.triage import triage


def planted(seed: int = 3) -> pd.DataFrame:
    """160 rows of four intents: two in three auto-approved, one in three a human's; about one in ten of each
    carries a wrong label (`true` keeps the right one)."""
    rows = synthetic_rows(per_label=40, seed=seed)
    rng = random.Random(1)
    labels = sorted({r["label"] for r in rows})
    frame = pd.DataFrame(rows)
    frame["id"] = range(len(frame))
    frame["text_key"] = [text_key(t) for t in frame["text"]]
    frame["source"] = ["label-studio" if i % 3 == 0 else "auto-approved" for i in range(len(frame))]
    frame["true"] = frame["label"]
    for i in range(len(frame)):
        if i % 10 == 1 or i % 15 == 0:
            frame.loc[i, "label"] = rng.choice([lab for lab in labels if lab != frame.loc[i, "true"]])
    return frame


def test_planted_errors_are_flagged_and_human_labels_never() -> None:
    frame = planted()
    wrong = frame["label"] != frame["true"]
    flagged, checked = audit.find_issues(frame, load_settings(), {}, "lr", 10.0, 42)
    assert checked == int((frame["source"] == "auto-approved").sum())
    assert set(flagged["source"]) == {"auto-approved"}  # 16 human labels are wrong too: not the audit's to drop
    caught = set(flagged["id"]) & set(frame.loc[wrong & (frame["source"] == "auto-approved"), "id"])
    assert len(caught) == int((wrong & (frame["source"] == "auto-approved")).sum()) == 11  # every planted one
    assert len(flagged) - len(caught) <= 4  # and few false alarms
    hits = flagged[flagged["id"].isin(caught)]
    assert (hits["suggested"] == frame.set_index("id").loc[hits["id"], "true"].to_numpy()).mean() >= 0.9
    assert flagged["quality"].is_monotonic_increasing  # the most suspect first


def test_screen_drops_flagged_train_and_val_rows_but_keeps_test_rows_and_can_be_off() -> None:
    frame = planted()
    third = len(frame) // 3
    splits = Splits(frame.iloc[:third], frame.iloc[third:2 * third], frame.iloc[2 * third:], "given")
    settings = load_settings()
    kept, result = audit.screen(frame, splits, settings, {}, "lr", 10.0, 42)
    keys = set(result.examples["text_key"])
    assert result.flagged == len(keys) >= 11
    assert not keys & set(kept.train["text_key"]) and not keys & set(kept.val["text_key"])
    assert kept.test.equals(splits.test)  # scoring on rows chosen by the model's disagreement would flatter it
    assert result.excluded_keys == keys - set(splits.test["text_key"])
    assert result.by_source == {"auto-approved": {"checked": result.checked, "flagged": result.flagged}}
    off, nothing = audit.screen(frame, splits, settings.model_copy(update={"audit_labels": False}), {}, "lr", 10, 42)
    assert off is splits and not nothing.enabled and nothing.flagged == 0
    humans = frame.assign(source="label-studio")
    same, skipped = audit.screen(humans, splits, settings, {}, "lr", 10.0, 42)
    assert same is splits and skipped.skipped == "no auto-approved or feedback labels"


@pytest.fixture
def tracked(settings: Settings, shared_tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Settings:  # noqa: F811
    """A fresh database, and a model and experiment of its own on one shared tracking store."""
    return on_shared_tracking(monkeypatch, shared_tracking_uri)


def _store_planted(settings: Settings, frame: pd.DataFrame) -> dict[int, str]:
    """Each row as a captured teacher answer, triaged (auto-approved), then a human's label on one in three."""
    qids = {int(i): str(uuid.uuid4()) for i in frame["id"]}
    log_queries(settings, [{"id": qids[int(r.id)], "text": r.text, "predicted_label": r.label, "confidence": 0.95,
                            "provider": "teacher"} for r in frame.itertuples()])
    assert triage(settings.model_copy(update={"audit_rate": 0.0})).auto_approved == len(frame)
    with store.connect(settings) as conn:
        for r in frame[frame["source"] == "label-studio"].itertuples():
            groundtruth.upsert_label(conn, query_id=qids[int(r.id)], text=r.text, label=r.label,
                                     source="label-studio", reviewer="r@x", shares=settings.split_shares)
    return qids


def _queries(settings: Settings, ids: list[str]) -> dict[str, Any]:
    q = store.queries
    with store.connect(settings) as conn:
        return {r.id: r for r in conn.execute(select(q).where(q.c.id.in_(ids)))}


def test_training_leaves_flagged_rows_out_sends_them_to_review_once_and_logs_the_audit(
    tracked: Settings, tmp_path: Path
) -> None:
    frame = planted()
    qids = _store_planted(tracked, frame)
    result = train(tracked)
    client = registry.get_client(tracked)
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["audit_checked"] == 106 and metrics["audit_flagged"] >= 11
    assert metrics["audit_flagged_share.auto-approved"] == pytest.approx(metrics["audit_flagged"] / 106, abs=1e-4)
    assert run.data.params["audit.enabled"] == "True" and run.data.params["audit.folds"] == "3"
    with open(client.download_artifacts(result.run_id, "audit/flagged.csv", str(tmp_path))) as fh:
        examples = list(csv.DictReader(fh))
    assert len(examples) == metrics["audit_flagged"]
    wrong = frame[(frame["label"] != frame["true"]) & (frame["source"] == "auto-approved")]
    assert set(wrong["text"]) <= {row["text"] for row in examples}

    used = json.loads(Path(client.download_artifacts(result.run_id, "splits.json", str(tmp_path))).read_text())
    with store.connect(tracked) as conn:
        by_row = dict(conn.execute(select(store.ml_data.c.id, store.ml_data.c.query_id)).all())
    trained = {by_row[i] for i in used["train"] + used["val"]}
    flagged_queries = {qids[int(i)] for i in frame.loc[frame["text"].isin({r["text"] for r in examples}), "id"]}
    assert metrics["audit_excluded"] == len(flagged_queries - {by_row[i] for i in used["test"]})
    assert not trained & flagged_queries  # left out of this training
    humans = {qids[int(i)] for i in frame.loc[frame["source"] == "label-studio", "id"]}
    assert humans <= {by_row[i] for i in used["train"] + used["val"] + used["test"]}  # never dropped

    queued = _queries(tracked, sorted(flagged_queries))
    assert {(q.review_status, q.review_priority) for q in queued.values()} == {(store.NEEDS_REVIEW, 2)}
    assert metrics["audit_queued"] == len(flagged_queries)

    planted_ids = {qids[int(i)] for i in wrong["id"]}
    answered = sorted(flagged_queries & planted_ids)[0]  # a reviewer corrects one of them (the pull's path)
    with store.connect(tracked) as conn:
        query = _queries(tracked, [answered])[answered]
        groundtruth.settle(conn, [query], frame.loc[frame["text"] == query.text, "true"].item(), reviewer="r@x",
                           shares=tracked.split_shares)
    again = train(tracked)
    with open(client.download_artifacts(again.run_id, "audit/flagged.csv", str(tmp_path / "again"))) as fh:
        flagged_again = {qids[int(i)] for i in frame.loc[frame["text"].isin({r["text"] for r in csv.DictReader(fh)}),
                                                          "id"]}
    assert answered not in flagged_again  # a human label now: not the audit's to question
    newly = flagged_again - flagged_queries  # only a row never flagged before is queued
    assert client.get_run(again.run_id).data.metrics["audit_queued"] == len(newly)
    with store.connect(tracked) as conn:
        assert conn.execute(select(func.count()).select_from(store.audits)).scalar() == len(flagged_queries | newly)
        outcome = conn.execute(select(store.audits.c.outcome).where(store.audits.c.query_id == answered)).scalar()
    assert outcome == store.CORRECTED  # the human changed the flagged label
    assert _queries(tracked, [answered])[answered].review_status == store.APPROVED  # answered: not re-queued
