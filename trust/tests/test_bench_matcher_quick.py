"""bench/matcher.py --quick: the matcher role (and the web processes that hand it orders)
against the embedded path, on a database of its own next to the test database and the
test run's Redis. The figures are not judged, only that they were measured: orders
placed and found (and cancels, in the mix, carried out), no errors, no engine rebuilds in the matcher after the warm-up, a
restarted matcher serving its deep book."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection

from trust.tests.benches import bench_run

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
    reason="the matcher runs on PostgreSQL and Redis",
)


def test_bench_matcher_quick(tmp_path):
    out = tmp_path / "matcher.json"
    run = bench_run(
        "matcher.py",
        "dexsite_benchm",
        "--quick",
        "--only",
        "service,mix,http,restart",
        "--json",
        str(out),
    )
    log = (run.stdout + run.stderr)[-4000:]
    assert run.returncode == 0, log
    figures = json.loads(out.read_text())
    rows = {(r["path"], r["arrangement"]): r for r in figures["medians"]}
    assert set(rows) == {
        ("service", "embedded"),
        ("service", "matcher"),
        ("mix", "embedded, cancels"),
        ("mix", "matcher, cancels"),
        ("http", "embedded web"),
        ("http", "1 web + matcher"),
        ("http", "2 web + matcher"),
    }, log
    for key, row in rows.items():
        assert row["orders"] > 0 and row["orders_per_s"] > 0, (key, log)
        assert row["errors"] == 0 and row["verified"], (key, log)
        assert row["p99_ms"] >= row["p50_ms"] > 0, (key, log)
        assert row["exchange_cpu_ms"] > 0, (key, log)
        if key[0] == "mix":
            # Cancels were sent, and some found their order still open.
            assert row["cancels"] > row["not_open"] >= 0, (key, log)
        if "matcher" in key[1]:
            assert row["builds"] == 0, (key, log)
            assert row["cpu"]["matcher"] > 0, (key, log)
    restart = figures["restart"]
    assert restart["book"]["resting"] >= 2000 and restart["book"]["invariants"] == []
    (start,) = restart["starts"]
    assert 0 < start["ready_s"] <= start["first_answer_s"], log
    assert start["first_answer"] == "NEW", log
