"""Micro-batching: the requests that arrive together are predicted together, small batches on the loop itself.

No request waits for a batch to fill: the requests that arrive in one turn of the event loop form a batch,
and whatever arrives while the model is busy forms the next one. Under load the batches grow by themselves,
and the loop handles the sockets of a whole batch per wake-up. Batches of up to `inline_max` texts (a few
milliseconds of work) are predicted on the loop: the model holds the GIL, so a worker thread cannot run beside the
loop anyway and the hand-off only adds context switches (measured at 8 connections: 552 -> 440 µs CPU per request,
BENCHMARKS.md "Serving"). Bigger bursts go to one worker thread, so the loop still gets the GIL every switch
interval (5 ms) to accept connections and answer /health.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Item = tuple[Any, str, "asyncio.Future[Any]"]


def predict_items(items: list[tuple[Any, str]]) -> list[Any]:
    """Predict (router, text) pairs with the lean one-text path; an exception is returned in its place.

    One call per batch, not per text: the thread hand-off is paid once. `predict_one` is used even for
    big batches because it is as fast per text as sklearn's batch path up to ~32 texts, and it keeps a
    text's answer independent of which requests it happened to share a batch with.
    """
    out: list[Any] = []
    for router, text in items:
        try:
            out.append(router.predict_one(text))
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            out.append(exc)
    return out


class MicroBatcher:
    """Collects predictions asked for concurrently and runs them as batches: on the loop, or one worker thread."""

    def __init__(self, max_batch: int = 128, inline_max: int = 16) -> None:
        self.max_batch = max_batch
        self.inline_max = inline_max
        self._queue: list[Item] = []
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.batches = 0
        self.predicted = 0

    async def predict(self, router: Any, text: str) -> Any:
        """The model's Prediction for one text, computed in a batch with its concurrent neighbours."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((router, text, fut))
        if not self._busy:
            self._busy = True
            loop.create_task(self._drain(loop))
        return await fut

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                pairs = [(router, text) for router, text, _ in batch]
                if len(pairs) <= self.inline_max:
                    # predicted right here: the hand-off to the thread and back costs more than it saves
                    results = predict_items(pairs)
                else:
                    try:
                        results = await loop.run_in_executor(self._executor, predict_items, pairs)
                    except Exception as exc:  # noqa: BLE001 - e.g. the executor is shut down
                        results = [exc] * len(batch)
                self.batches += 1
                self.predicted += len(batch)
                for (_, _, fut), res in zip(batch, results, strict=True):
                    if fut.done():
                        continue  # the client went away
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self._busy = False

    def close(self) -> None:
        """Stop the worker thread (pending batches finish first)."""
        self._executor.shutdown(wait=True)
