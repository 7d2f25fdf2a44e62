"""The micro-batcher (serving/batcher.py): each request gets its own answer, errors reach their request."""

from __future__ import annotations

from typing import Any

import pytest

from intelrouter.config import Settings
from intelrouter.loading import load_router


def test_batcher_answers_each_request_with_its_own_prediction(serve_settings: Settings) -> None:
    import asyncio

    from serving.batcher import MicroBatcher

    router = load_router(f"models:/{serve_settings.model_name}/1", serve_settings.tracking_uri)
    texts = [f"{t} {i}" for i in range(12) for t in ("what is my balance", "set an alarm", "will it rain")]
    want = [router.predict_one(t) for t in texts]

    async def run() -> list[Any]:
        batcher = MicroBatcher()
        got = await asyncio.gather(*[batcher.predict(router, t) for t in texts])
        assert batcher.predicted == len(texts) and batcher.batches < len(texts)  # requests were batched
        batcher.close()
        return got

    assert asyncio.run(run()) == want


def test_batcher_hands_a_model_error_to_the_request(serve_settings: Settings) -> None:
    import asyncio

    from serving.batcher import MicroBatcher

    class Broken:
        def predict_one(self, text: str) -> Any:
            raise ValueError(f"cannot predict {text}")

    async def run() -> None:
        batcher = MicroBatcher()
        for _ in range(2):
            results = await asyncio.gather(*[batcher.predict(Broken(), f"t{i}") for i in range(3)],
                                           return_exceptions=True)
            assert [str(r) for r in results] == ["cannot predict t0", "cannot predict t1", "cannot predict t2"]
        batcher.close()

    asyncio.run(run())


def test_batcher_predicts_small_batches_in_place_and_big_ones_on_the_thread() -> None:
    import asyncio
    import threading

    from serving.batcher import MicroBatcher

    class Recorder:
        def __init__(self) -> None:
            self.threads: list[str] = []

        def predict_one(self, text: str) -> str:
            if text == "bad":
                raise ValueError("cannot predict bad")
            self.threads.append(threading.current_thread().name)
            return text.upper()

    async def run() -> None:
        batcher, model = MicroBatcher(inline_max=3), Recorder()
        loop_thread = threading.current_thread().name
        assert await batcher.predict(model, "alone") == "ALONE"
        assert model.threads == [loop_thread]  # no hand-off for a batch of one
        with pytest.raises(ValueError, match="cannot predict bad"):
            await batcher.predict(model, "bad")  # a lone request's error still reaches it
        model.threads.clear()
        assert await asyncio.gather(*[batcher.predict(model, f"s{i}") for i in range(3)]) == ["S0", "S1", "S2"]
        assert model.threads == [loop_thread] * 3 and batcher.batches == 3  # one batch of three, on the loop
        model.threads.clear()
        got = await asyncio.gather(*[batcher.predict(model, f"t{i}") for i in range(4)])
        assert got == ["T0", "T1", "T2", "T3"]
        assert len(model.threads) == 4 and all(name.startswith("predict") for name in model.threads)  # the worker
        batcher.close()

    asyncio.run(run())
