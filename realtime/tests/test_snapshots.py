"""Reads shared by the sockets that ask at once (realtime/snapshots.py): each asker gets
a read begun after it asked, never one already in flight."""

import asyncio

import pytest

from realtime.snapshots import SharedReads

pytestmark = pytest.mark.asyncio


class Reads:
    """A read per call, each held until released: what was read, and in what order."""

    def __init__(self) -> None:
        self.begun: list[tuple[str, int]] = []
        self.release: dict[int, asyncio.Event] = {}
        self.fail: set[int] = set()

    async def __call__(self, key: str) -> tuple[str, int]:
        n = len(self.begun) + 1
        self.begun.append((key, n))
        self.release[n] = asyncio.Event()
        await self.release[n].wait()
        if n in self.fail:
            raise RuntimeError(f"read {n} failed")
        return key, n

    async def begun_count(self, n: int) -> None:
        while len(self.begun) < n:
            await asyncio.sleep(0)


async def test_askers_during_a_read_share_the_next_one_not_the_one_in_flight():
    reads = Reads()
    shared = SharedReads(reads)
    first = asyncio.ensure_future(shared.get(("A",)))
    await reads.begun_count(1)
    # Asked while read 1 is in flight: it may hold a state from before they asked.
    later = [asyncio.ensure_future(shared.get(("A",))) for _ in range(50)]
    other = asyncio.ensure_future(shared.get(("B",)))
    await reads.begun_count(2)
    assert reads.begun == [("A", 1), ("B", 2)]

    reads.release[1].set()
    assert await first == ("A", 1)
    await reads.begun_count(3)
    assert reads.begun[2] == ("A", 3)
    reads.release[3].set()
    assert {await t for t in later} == {("A", 3)}
    reads.release[2].set()
    assert await other == ("B", 2)
    assert len(reads.begun) == 3


async def test_a_failed_read_fails_its_askers_only_and_a_closed_asker_cancels_nothing():
    reads = Reads()
    shared = SharedReads(reads)
    reads.fail.add(2)
    first = asyncio.ensure_future(shared.get(("A",)))
    await reads.begun_count(1)
    failing = [asyncio.ensure_future(shared.get(("A",))) for _ in range(3)]
    reads.release[1].set()
    assert await first == ("A", 1)
    await reads.begun_count(2)
    gone = asyncio.ensure_future(shared.get(("A",)))
    staying = asyncio.ensure_future(shared.get(("A",)))
    await asyncio.sleep(0)
    gone.cancel()
    reads.release[2].set()
    for t in failing:
        with pytest.raises(RuntimeError, match="read 2 failed"):
            await t
    await reads.begun_count(3)
    reads.release[3].set()
    assert await staying == ("A", 3)
    with pytest.raises(asyncio.CancelledError):
        await gone
