"""bench/ws_storm.py, small: sockets opening at once against the ws role and the bare
`websockets` server, on a database of its own and the test run's Redis. The figures are
not judged, only that both arrangements opened every socket."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection

from trust.tests.benches import bench_run

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
    reason="the ws role runs on PostgreSQL and Redis",
)


def test_bench_ws_storm_quick():
    run = bench_run(
        "ws_storm.py", "dexsite_benchws", "--sockets", "60", "--rounds", "1", "--settle", "0.5"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split("|") for line in run.stdout.splitlines() if line.startswith("| ")]
    by_name = {r[1].strip(): r for r in rows[1:]}
    assert set(by_name) == {"ws role", "bare websockets"}
    assert all(r[-2].strip() == "0" for r in by_name.values()), run.stdout
