"""The server's batcher (serve/batching.py): batches close when full or after the wait, form only
when the model is free, and every caller gets its own row. Plain asyncio, no Ray."""

import asyncio

import pytest

from serve.batching import Batcher


class SlowDouble:
    """A model that takes ``run_s`` per batch and records the batches it was given."""

    def __init__(self, run_s: float = 0.0, fail_first: bool = False):
        self.run_s, self.fail_first, self.batches = run_s, fail_first, []

    async def __call__(self, items):
        self.batches.append(list(items))
        await asyncio.sleep(self.run_s)
        if self.fail_first and len(self.batches) == 1:
            raise RuntimeError("the model broke")
        return [2 * item for item in items]


def test_a_batch_closes_when_full_without_waiting():
    async def scenario():
        model = SlowDouble()
        batcher = Batcher(model, max_batch=3, wait_s=10.0)  # a wait that would time the test out
        results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(6))), 2.0)
        return model.batches, results

    batches, results = asyncio.run(scenario())
    assert batches == [[0, 1, 2], [3, 4, 5]]
    assert results == [0, 2, 4, 6, 8, 10]


def test_a_lone_request_is_served_at_once_when_nothing_else_is_on_its_way():
    async def scenario():
        model, loop = SlowDouble(), asyncio.get_running_loop()
        batcher = Batcher(model, max_batch=8, wait_s=5.0)
        started = loop.time()
        result = await batcher.submit(21)
        return result, loop.time() - started, model.batches

    result, took_s, batches = asyncio.run(scenario())
    assert (result, batches) == (42, [[21]])
    assert took_s < 0.5  # not the 5 s wait


def test_a_forming_batch_waits_for_a_request_on_its_way():
    async def scenario():
        model = SlowDouble()
        batcher = Batcher(model, max_batch=8, wait_s=5.0)

        async def decoded_later(item):
            with batcher.arriving():
                await asyncio.sleep(0.1)  # read and decoded while the batch forms
            return await batcher.submit(item)

        results = await asyncio.gather(batcher.submit(1), decoded_later(2))
        return results, model.batches

    assert asyncio.run(scenario()) == ([2, 4], [[1, 2]])


def test_the_wait_for_requests_on_their_way_is_bounded():
    async def scenario():
        model, loop = SlowDouble(), asyncio.get_running_loop()
        batcher = Batcher(model, max_batch=8, wait_s=0.05)
        started = loop.time()
        with batcher.arriving():  # a request that never comes
            result = await batcher.submit(1)
        return result, loop.time() - started

    result, took_s = asyncio.run(scenario())
    assert result == 2 and 0.05 <= took_s < 1.0


def test_requests_arriving_while_a_batch_runs_form_one_full_batch_after_it():
    """One every 20 ms during a 300 ms batch, with a 10 ms wait: a batcher that formed the next batch
    as soon as the previous one started (as Ray's @serve.batch does) would cut them into batches of one."""
    async def scenario():
        model = SlowDouble(run_s=0.3)
        batcher = Batcher(model, max_batch=8, wait_s=0.01)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.02)
        later = []
        for i in range(1, 8):
            later.append(asyncio.ensure_future(batcher.submit(i)))
            await asyncio.sleep(0.02)
        await asyncio.gather(first, *later)
        return model.batches

    assert asyncio.run(scenario()) == [[0], [1, 2, 3, 4, 5, 6, 7]]


def test_a_failing_batch_fails_its_callers_only_and_the_next_batch_runs():
    async def scenario():
        model = SlowDouble(run_s=0.05, fail_first=True)
        batcher = Batcher(model, max_batch=2, wait_s=0.0)
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [type(o).__name__ for o in outcomes[:2]] == ["RuntimeError", "RuntimeError"]
    assert outcomes[2:] == [4, 6]


def test_a_caller_that_went_away_is_left_out_of_the_batch():
    async def scenario():
        model = SlowDouble(run_s=0.1)
        batcher = Batcher(model, max_batch=8, wait_s=0.0)
        running = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.02)  # the first batch runs; the next two wait
        gone = asyncio.ensure_future(batcher.submit(1))
        kept = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        return await running, await kept, model.batches

    assert asyncio.run(scenario()) == (0, 4, [[0], [2]])


def test_a_run_that_returns_too_few_results_fails_every_caller_instead_of_leaving_one_waiting():
    async def short(items):
        return [2 * item for item in items[:-1]]

    async def scenario():
        batcher = Batcher(short, max_batch=3, wait_s=0.0)
        return await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(3)),
                                                     return_exceptions=True), 2.0)

    outcomes = asyncio.run(scenario())
    assert [str(o) for o in outcomes] == ["the batch of 3 got 2 results"] * 3


def test_callers_of_a_running_batch_are_failed_when_the_consumer_is_cancelled():
    async def scenario():
        model = SlowDouble(run_s=10.0)
        batcher = Batcher(model, max_batch=2, wait_s=0.0)
        waiting = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)
        batcher._consumer.cancel()  # what stopping the replica's event loop does
        return await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 2.0)

    assert [str(o) for o in asyncio.run(scenario())] == ["the server is stopping"]


@pytest.mark.parametrize("max_batch, wait_s", [(0, 0.01), (4, -1.0)])
def test_impossible_settings_are_refused(max_batch, wait_s):
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(SlowDouble(), max_batch, wait_s)
