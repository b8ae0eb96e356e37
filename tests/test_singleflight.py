"""Single-flight logic (pure asyncio, no Redis): who shares a flight, and who never does."""

from __future__ import annotations

import asyncio
import threading

import pytest

from broadcast_layer._redis.singleflight import SingleFlight

from .conftest import within


class Source:
    """A read whose answer is the number of times it has run; each run waits for a gate."""

    def __init__(self) -> None:
        self.runs = 0
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.fail: Exception | None = None

    async def read(self) -> int:
        self.runs += 1
        run = self.runs
        self.started.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return run


async def _settled() -> None:
    for _ in range(5):  # let every task run to its first wait
        await asyncio.sleep(0)


async def test_calls_made_during_a_flight_share_the_next_one_never_the_current():
    flights, source = SingleFlight(), Source()
    first = asyncio.ensure_future(flights.run("k", source.read))
    await within(source.started.wait())
    late = [asyncio.ensure_future(flights.run("k", source.read)) for _ in range(20)]
    await _settled()
    assert source.runs == 1  # the late callers wait for the next flight, not a new one each
    source.gate.set()
    assert await within(first) == 1
    # The current flight may have been read before the late callers asked: they get the
    # second one, which started after all of them.
    assert await within(asyncio.gather(*late)) == [2] * 20
    assert source.runs == 2


async def test_nothing_is_cached_after_a_flight_and_keys_do_not_mix():
    flights, source = SingleFlight(), Source()
    source.gate.set()
    assert [await flights.run("k", source.read) for _ in range(3)] == [1, 2, 3]
    other = Source()
    other.gate.set()
    assert await asyncio.gather(flights.run("a", source.read), flights.run("b", other.read)) == [
        4,
        1,
    ]


async def test_an_error_reaches_every_caller_of_its_flight_only():
    flights, source = SingleFlight(), Source()
    source.fail = ValueError("boom")
    first = asyncio.ensure_future(flights.run("k", source.read))
    await within(source.started.wait())
    late = [asyncio.ensure_future(flights.run("k", source.read)) for _ in range(3)]
    await _settled()
    source.gate.set()
    results = await within(asyncio.gather(first, *late, return_exceptions=True))
    assert all(isinstance(result, ValueError) for result in results)
    source.fail = None
    assert await flights.run("k", source.read) == 3


async def test_a_cancelled_follower_leaves_the_others_alone():
    flights, source = SingleFlight(), Source()
    first = asyncio.ensure_future(flights.run("k", source.read))
    await within(source.started.wait())
    leader, follower, other = (asyncio.ensure_future(flights.run("k", source.read)) for _ in "abc")
    await _settled()
    follower.cancel()
    await _settled()
    source.gate.set()
    assert await within(asyncio.gather(first, leader, other)) == [1, 2, 2]
    with pytest.raises(asyncio.CancelledError):
        await follower


@pytest.mark.parametrize("who", ["running", "next"])
async def test_when_a_flight_leader_is_cancelled_its_followers_start_over(who):
    flights, source = SingleFlight(), Source()
    first = asyncio.ensure_future(flights.run("k", source.read))
    await within(source.started.wait())
    next_leader = asyncio.ensure_future(flights.run("k", source.read))
    await _settled()
    followers = [asyncio.ensure_future(flights.run("k", source.read)) for _ in range(3)]
    await _settled()
    cancelled = first if who == "running" else next_leader
    cancelled.cancel()
    await _settled()
    source.gate.set()
    survivors = [task for task in (first, next_leader) if task is not cancelled]
    results = await within(asyncio.gather(*survivors, *followers))
    assert len(set(results[len(survivors) :])) == 1  # the followers still shared one flight
    assert source.runs <= 3
    with pytest.raises(asyncio.CancelledError):
        await cancelled


def test_event_loops_never_share_a_flight():
    flights = SingleFlight()
    barrier = threading.Barrier(2)
    results: list[object] = []

    def in_its_own_loop() -> None:
        async def main() -> int:
            source = Source()
            flight = asyncio.ensure_future(flights.run("k", source.read))
            await within(source.started.wait())
            barrier.wait(10)  # both loops have a flight for "k" in progress now
            source.gate.set()
            return await within(flight) + 10 * (source.runs - 1)

        try:
            results.append(asyncio.run(main()))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=in_its_own_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [1, 1]  # each loop ran its own read, once
