"""Training data: permanent splits drawn from the text key, copies of a question counted once, the digest."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from sqlalchemy import select, text
from training_support import seed_ml_data, synthetic_rows

from intelrouter import store
from intelrouter.data import _clean, collapse_copies, data_digest, load_examples, split_examples
from intelrouter.keys import split_of, text_key

SHARES = (0.2, 0.1)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return _clean(pd.DataFrame([{"id": i, "created_at": None, "language": None, "source": "import", "split": None,
                                 "text_key": None, **r} for i, r in enumerate(rows)]))


def test_splits_follow_the_shares_and_out_of_scope_rows_never_train() -> None:
    frame = _frame(synthetic_rows(100, oos=40))
    splits = split_examples(frame, "oos", SHARES, random_state=42)
    n = len(frame)
    assert 0.15 < len(splits.test) / n < 0.25 and "oos" in set(splits.test["label"])
    assert "oos" not in set(splits.train["label"]) and "oos" in set(splits.val["label"])
    ids = [set(s["id"]) for s in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == n and splits.how == "permanent splits"


def test_a_split_depends_on_the_text_only_never_on_a_seed_or_the_other_rows() -> None:
    frame = _frame(synthetic_rows(40, oos=10))
    a = split_examples(frame, "oos", SHARES, random_state=7)
    b = split_examples(frame.iloc[::-1].reset_index(drop=True), "oos", SHARES, random_state=8)
    more = split_examples(_frame(synthetic_rows(40, oos=10) + synthetic_rows(40, seed=9)), "oos", SHARES, 1)
    assert set(a.test["id"]) == set(b.test["id"])
    assert set(a.test["text"]) <= set(more.test["text"])  # adding rows moves no earlier row


def test_copies_of_a_question_share_a_key_and_a_split() -> None:
    variants = ["Track my order", "track my order?", "  TRACK   my order!! ", "track my ORDER"]
    assert len({text_key(v) for v in variants}) == 1 and text_key("track my parcel") != text_key(variants[0])
    splits = {split_of(text_key(v), *SHARES) for v in variants}
    assert len(splits) == 1
    # values computed once: a row's split must survive restarts, replicas and upgrades
    assert [split_of(k, *SHARES) for k in ("key-0", "key-8", "key-14")] == ["train", "test", "val"]


def test_a_dataset_split_is_kept_and_val_aliases_are_read() -> None:
    rows = (synthetic_rows(30, oos=4, seed=1, split="train") + synthetic_rows(5, oos=3, seed=2, split="validation")
            + synthetic_rows(6, oos=5, seed=3, split="test"))
    splits = split_examples(_frame(rows), "oos", SHARES, 42)
    assert len(splits.test) == 4 * 6 + 5 and set(splits.test["split"]) == {"test"}
    assert len(splits.train) == 4 * 30 and "oos" not in set(splits.train["label"])
    assert len(splits.val) == 4 * 5 + 3 + 4  # the val split plus the out-of-scope rows of the train split


def test_copies_collapse_to_the_label_of_the_most_trusted_source() -> None:
    rows = [
        {"text": "Track my order", "label": "track", "source": "auto-approved", "created_at": datetime(2026, 1, 1)},
        {"text": "track my order?", "label": "cancel", "source": "label-studio", "created_at": datetime(2026, 1, 1)},
        {"text": "track my order", "label": "track", "source": "feedback", "created_at": datetime(2026, 1, 3)},
        {"text": "hello", "label": "greet", "source": "feedback", "created_at": datetime(2026, 1, 1)},
        {"text": "Hello!", "label": "other", "source": "feedback", "created_at": datetime(2026, 1, 2)},
    ]
    kept, dropped = collapse_copies(_frame(rows))
    assert dropped == 3 and len(kept) == 2
    assert dict(zip(kept["text"], kept["label"], strict=True)) == {"track my order?": "cancel", "Hello!": "other"}


def test_data_digest_ignores_row_order_but_not_labels() -> None:
    frame = _frame(synthetic_rows(10))
    assert data_digest(frame) == data_digest(frame.iloc[::-1])
    changed = frame.copy()
    changed.loc[0, "label"] = "other"
    assert data_digest(changed) != data_digest(frame)


def test_rows_get_their_split_when_they_enter_ml_data(settings) -> None:  # noqa: ANN001
    seed_ml_data(settings, synthetic_rows(30, seed=3) + [{"text": "kept as imported", "label": "x", "split": "dev"}])
    frame, _ = load_examples(settings)
    assert frame["split"].isin(["train", "val", "test"]).all() and frame["text_key"].str.len().eq(64).all()
    assert frame.loc[frame["text"] == "kept as imported", "split"].item() == "val"
    expected = [split_of(text_key(t), *settings.split_shares) for t in frame["text"]]
    assert list(frame.loc[frame["text"] != "kept as imported", "split"]) == [
        e for e, t in zip(expected, frame["text"], strict=True) if t != "kept as imported"]


def test_the_migration_gives_existing_rows_a_split_and_keeps_their_own(settings) -> None:  # noqa: ANN001
    store.upgrade(settings, "0001")
    with store.connect(settings, migrate=False) as conn:
        for i, (words, split) in enumerate([("what is the weather", None), ("book a flight", "test"),
                                            ("Play  some JAZZ", "validation"), ("set an alarm", "")]):
            conn.execute(text("INSERT INTO ml_data (dedup_key, text, label, source, split, created_at, updated_at) "
                              "VALUES (:k, :t, 'x', 'import', :s, :now, :now)"),
                         {"k": f"k{i}", "t": words, "s": split, "now": datetime(2026, 1, 1)})
    store.upgrade(settings)
    with store.connect(settings) as conn:
        rows = {r.text: r for r in conn.execute(select(store.ml_data.c.text, store.ml_data.c.split,
                                                       store.ml_data.c.text_key))}
    assert rows["book a flight"].split == "test" and rows["Play  some JAZZ"].split == "val"
    for words in ("what is the weather", "set an alarm"):
        assert rows[words].text_key == text_key(words)
        assert rows[words].split == split_of(text_key(words), 0.2, 0.1)


@pytest.mark.parametrize("shares", [(0.5, 0.6), (0.9, 0.2)])
def test_shares_that_leave_nothing_to_train_are_refused(shares: tuple[float, float]) -> None:
    from intelrouter.config import load_settings
    from intelrouter.errors import ConfigError

    with pytest.raises(ConfigError, match="test_size"):
        load_settings(test_size=shares[0], val_size=shares[1])
