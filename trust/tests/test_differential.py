"""Scenario 2, differential engine test: a long seeded stream of commands (limit and
market orders of every time in force, cancels of live, dead and unknown ids, renames,
duplicate ids, sweep probes) through the matching engine and the naive reference book
in lockstep. Every command's outcome (status, fills, self-trade cancels, book deltas)
must be identical, and at every 100th step the two books, the depth a market-data
consumer rebuilds from the deltas, and the engine's internal bookkeeping must agree.

`TRUST_DIFF_COMMANDS` sets the length (default 100,000), `TRUST_DIFF_SEED` the seed.
"""

from __future__ import annotations

import os
import sys
import time

from trading.tests.engine.test_differential import EXERCISED, seeded_run

COMMANDS = int(os.environ.get("TRUST_DIFF_COMMANDS", "100000"))
SEED = int(os.environ.get("TRUST_DIFF_SEED", "20240612"))
CHECK_EVERY = 100


def test_engine_matches_reference_over_a_long_stream() -> None:
    started = time.monotonic()
    harness = seeded_run(SEED, COMMANDS, CHECK_EVERY)
    elapsed = time.monotonic() - started
    c = harness.counts
    print(
        f"\ndifferential: {COMMANDS} commands (seed {SEED}), {harness.steps} steps, "
        f"{c['fills']} fills, identical; {elapsed:.1f}s",
        file=sys.stderr,
    )
    # The stream still exercises every path, in proportion to its length.
    scale = COMMANDS / 20_000
    for key in (*EXERCISED, "cancel_miss"):
        assert c[key] > 100 * scale, (key, dict(c))
    assert c["fills"] > 4_000 * scale and c["stp"] > 500 * scale, dict(c)
    assert c["refused"] > 50 * scale, dict(c)
