"""The soak's peak is what the site serves once the book has grown, not what a young
book allows: the warm-up is not counted, and the rate is the median of windows.

The site here is a stand-in that answers the soak's requests one at a time, quickly
for its first YOUNG requests and ten times slower after them (a young book is cheaper
to serve than a grown one); only the load generator's calibration is under test."""

from __future__ import annotations

import asyncio
import itertools

from aiohttp import web

from trust.procs import free_port
from trust.soak import measure_peak, peak_of

YOUNG = 300
YOUNG_SERVICE = 0.002
GROWN_SERVICE = 0.02


async def with_stand_in(measure):
    served = itertools.count()
    ids = itertools.count(1)
    one_at_a_time = asyncio.Lock()

    async def answer(request: web.Request) -> web.Response:
        async with one_at_a_time:
            young = next(served) < YOUNG
            await asyncio.sleep(YOUNG_SERVICE if young else GROWN_SERVICE)
        if request.method == "POST":
            return web.json_response({"id": next(ids), "status": "NEW"}, status=201)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await measure(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def peak(warmup: float) -> tuple[float, list[float]]:
    tokens = [f"t{i}" for i in range(4)]
    return asyncio.run(
        with_stand_in(lambda base: measure_peak(base, tokens, warmup, 2.0, 16, 20, window=0.5))
    )


def test_the_peak_is_measured_after_the_young_book():
    grown_rate = 1 / GROWN_SERVICE
    # The stand-in's young requests take 0.6 s at most: the warm-up is past them.
    rate, windows = peak(warmup=1.0)
    assert len(windows) == 4
    assert 0.5 * grown_rate < rate <= 1.1 * grown_rate, windows
    # Without the warm-up the young requests count, and the peak is overstated.
    young_counted, _ = peak(warmup=0.0)
    assert young_counted > 1.5 * rate


def test_one_stalled_or_lucky_window_does_not_move_the_peak():
    assert peak_of([100, 100, 0, 100, 100]) == 100
    assert peak_of([100, 100, 400, 100]) == 100
