"""One forward pass for the windows of all connections: a small queue in front of the model.

Each connection asks for its window's top-k and waits; one task takes every window waiting
(up to `max_batch`) into one `classify_windows` call on a worker thread, and while that runs the
next windows gather. Nothing waits on a timer: a lone client is classified at once, and many
clients share the pass's fixed cost (one model call, one thread hop) instead of queueing for
the model one by one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import torch

from accel_signs.model.checkpoint import Checkpoint
from accel_signs.model.tta import flip_index
from accel_signs.serve.pipeline import Timings, Window, classify_windows

logger = logging.getLogger(__name__)


class Batcher:
    """Classifies the windows of every connection of one server, batched."""

    def __init__(
        self, ckpt: Checkpoint, pool: concurrent.futures.Executor, max_batch: int = 64, tta_flip: bool = False
    ):
        self.ckpt, self.pool, self.max_batch = ckpt, pool, max_batch
        self.tta_flip = tta_flip
        self._flip: tuple[Checkpoint, torch.Tensor | None] | None = None  # the checkpoint's mirror map, once
        self.waiting: list[tuple[Window, asyncio.Future]] = []
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.batches = self.windows = 0  # for the log and the benchmark: windows per pass

    async def classify(self, window: Window) -> tuple[list[dict[str, Any]], Timings, int]:
        """The window's top-k, its share of the pass's CPU time, and how many windows shared it."""
        if self.task is None or self.task.done():  # made on the server's own event loop
            self.wake = asyncio.Event()
            self.task = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((window, future))
        self.wake.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.waiting:
                batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
                batch = [(w, f) for w, f in batch if not f.cancelled()]  # its client left meanwhile
                if not batch:
                    continue
                try:
                    windows = [w for w, _ in batch]
                    results = await loop.run_in_executor(
                        self.pool, classify_windows, self.ckpt, windows, 5, self._mirror()
                    )
                except Exception as e:  # noqa: BLE001 - each waiting connection hears of it, the queue goes on
                    logger.error("classifying %d window(s) failed: %r", len(batch), e)
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                self.batches, self.windows = self.batches + 1, self.windows + len(batch)
                for (_, f), (top, timings) in zip(batch, results):
                    if not f.done():
                        f.set_result((top, timings, len(batch)))

    def _mirror(self) -> torch.Tensor | None:
        """--tta-flip's mirror map for the checkpoint (loaded after the batcher was made, perhaps)."""
        if self._flip is None or self._flip[0] is not self.ckpt:
            self._flip = (self.ckpt, flip_index(self.ckpt, self.tta_flip))
        return self._flip[1]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
