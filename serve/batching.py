"""Windows of concurrent requests gathered into batches that form only when the model is free.

Ray's ``@serve.batch`` forms the next batch as soon as the previous one *starts* (its loop takes
a batch, hands it to a task, and only that task waits for the model), so while a CPU batch of AST
runs for a second, the next batch closes after ``batch_wait`` with the two or three requests that
arrived by then, and the rest wait behind it: measured here, batches of 8, 3, 3, 2, 8, 3, ... under
16 concurrent requests (mean 3.6). Here the one consumer forms a batch only after the previous one
finished, from everything queued meanwhile (up to ``max_batch``), so under load every batch is full.

May import: nothing of the block (pure asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """``await submit(item)`` returns ``run(batch)[i]`` for the item's place ``i`` in the batch it joined.

    A batch closes when it holds ``max_batch`` items, or ``wait_s`` after its first item arrived, or
    at once when no other request is on its way (inside ``arriving()``, e.g. being read and decoded):
    a lone request pays no wait. ``run`` is awaited before the next batch forms. What ``run`` raises
    reaches every caller of that batch (as does a result missing, or the consumer being cancelled), and
    the batcher goes on with the next. A caller that went away (its request cancelled) is left out of the
    batch if it has not formed yet.
    """

    def __init__(self, run: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int, wait_s: float):
        if max_batch < 1 or wait_s < 0:
            raise ValueError(f"max_batch {max_batch} must be 1 or more and wait_s {wait_s} 0 or more")
        self._run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] | None = None
        self._consumer: asyncio.Task | None = None
        self._arriving = 0

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around a request's way to ``submit`` (reading, decoding): a forming batch waits for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, item: Item) -> Result:
        if self._consumer is None or self._consumer.done():  # created on the replica's own event loop
            self._queue = self._queue or asyncio.Queue()
            self._consumer = asyncio.get_running_loop().create_task(self._consume())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _consume(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            items, futures = [item for item, _ in batch], [future for _, future in batch]
            try:
                results = await self._run(items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batch of {len(items)} got {len(results)} results")
            except Exception as exc:  # noqa: BLE001 - each caller gets it; the consumer lives on
                _fail(futures, exc)
                continue
            except BaseException:  # the consumer itself is cancelled (the replica stops): nobody waits forever
                _fail(futures, RuntimeError("the server is stopping"))
                raise
            for future, result in zip(futures, results):
                if not future.done():
                    future.set_result(result)

    async def _next_batch(self) -> list[tuple[Item, asyncio.Future]]:
        """The first waiting item, then whatever joins it within ``wait_s``, up to ``max_batch``."""
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():  # queued while the model ran: take them without waiting
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not self._arriving:  # nothing more is coming: do not wait for it
                break
            getter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({getter}, timeout=remaining)
            if not getter.done():
                getter.cancel()  # not asyncio.wait_for: on 3.11 it can drop an item got just as time ran out
                try:
                    batch.append(await getter)  # it may have got one as it was cancelled
                except asyncio.CancelledError:
                    pass
                break
            batch.append(getter.result())
        return [(item, future) for item, future in batch if not future.cancelled()]


def _fail(futures: list[asyncio.Future], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)
