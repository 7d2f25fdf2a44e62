"""How training splits ground truth: a split column is honoured, out-of-scope rows never train."""

from __future__ import annotations

import pandas as pd
from training_support import synthetic_rows

from intelrouter.data import _clean, data_digest, split_examples


def _frame(rows: list[dict]) -> pd.DataFrame:
    return _clean(pd.DataFrame([{"id": i, "created_at": None, "language": None, "source": "import", **r}
                                for i, r in enumerate(rows)]))


def test_stratified_split_keeps_every_label_in_test_and_oos_out_of_train() -> None:
    frame = _frame(synthetic_rows(40, oos=20))
    splits = split_examples(frame, "oos", test_size=0.2, random_state=42, need_val=True)
    assert "oos" not in set(splits.train["label"])
    assert set(splits.test["label"]) == {"weather", "book_flight", "play_music", "set_alarm", "oos"}
    assert (splits.val["label"] == "oos").sum() == 10 and (splits.test["label"] == "oos").sum() == 10
    assert (splits.test["label"] == "weather").sum() == 8  # 20 % of 40
    assert (splits.val["label"] == "weather").sum() > 0  # carved from train for the threshold
    ids = [set(s["id"]) for s in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == len(frame)


def test_split_is_deterministic_for_a_seed() -> None:
    frame = _frame(synthetic_rows(30, oos=6))
    a = split_examples(frame, "oos", 0.2, 7, need_val=False)
    b = split_examples(frame, "oos", 0.2, 7, need_val=False)
    c = split_examples(frame, "oos", 0.2, 8, need_val=False)
    assert list(a.test["id"]) == list(b.test["id"]) and list(a.test["id"]) != list(c.test["id"])
    assert a.val.empty and (a.test["label"] == "oos").sum() == 6  # no validation needed: OOS all measure recall


def test_split_column_is_honoured() -> None:
    rows = (synthetic_rows(30, oos=4, seed=1, split="train") + synthetic_rows(5, oos=3, seed=2, split="val")
            + synthetic_rows(6, oos=5, seed=3, split="test") + synthetic_rows(3, seed=4))  # unsplit rows train
    frame = _frame(rows)
    splits = split_examples(frame, "oos", 0.2, 42, need_val=True)
    assert set(splits.test["split"]) == {"test"} and len(splits.test) == 4 * 6 + 5
    assert set(splits.train["split"].fillna("none")) == {"train", "none"} and "oos" not in set(splits.train["label"])
    assert len(splits.train) == 4 * 30 + 4 * 3
    # validation: the val split plus the out-of-scope rows of the train split (they only choose the threshold)
    assert len(splits.val) == 4 * 5 + 3 + 4 and (splits.val["label"] == "oos").sum() == 7
    assert "split column" in splits.how


def test_rare_labels_stay_in_train() -> None:
    frame = _frame(synthetic_rows(10) + [{"text": "a one-off request", "label": "rare", "split": None}])
    splits = split_examples(frame, "oos", 0.2, 42, need_val=False)
    assert "rare" in set(splits.train["label"]) and "rare" not in set(splits.test["label"])


def test_data_digest_ignores_row_order_but_not_labels() -> None:
    frame = _frame(synthetic_rows(10))
    assert data_digest(frame) == data_digest(frame.iloc[::-1])
    changed = frame.copy()
    changed.loc[0, "label"] = "other"
    assert data_digest(changed) != data_digest(frame)
