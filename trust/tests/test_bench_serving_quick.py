"""bench/serving.py --quick: the order path's HTTP under uvicorn (one port), granian and
granian behind nginx, each handing orders to one matcher, on a database of its own next
to the test database and the test run's Redis. The figures are not judged, only that
they were measured: orders placed and found, no errors, the router's CPU counted where
it runs. (That the matcher builds no engine book after a warm-up is
test_bench_matcher_quick's to judge: under load a short warm-up may end before the
first order of a round reaches it.)"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection

from trust import procs
from trust.tests.benches import bench_run

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
        reason="the matcher runs on PostgreSQL and Redis",
    ),
    pytest.mark.skipif(
        procs.nginx_path() is None,
        reason="nginx is not installed (Debian's package: make install-nginx)",
    ),
]


def test_bench_serving_quick(tmp_path):
    out = tmp_path / "serving.json"
    run = bench_run("serving.py", "dexsite_benchs", "--quick", "--json", str(out))
    log = (run.stdout + run.stderr)[-4000:]
    assert run.returncode == 0, log
    figures = json.loads(out.read_text())
    rows = {(r["path"], r["arrangement"]): r for r in figures["medians"]}
    assert set(rows) == {
        ("order", "uvicorn (one port)"),
        ("order", "granian 1x8"),
        ("order", "nginx + granian 1x8"),
    }, log
    for key, row in rows.items():
        assert row["orders"] > 0 and row["orders_per_s"] > 0, (key, log)
        assert row["errors"] == 0 and row["verified"], (key, log)
        assert row["p99_ms"] >= row["p50_ms"] > 0, (key, log)
        assert row["cpu"]["web"] > 0 and row["cpu"]["matcher"] > 0, (key, log)
        assert ("router" in row["cpu"]) == key[1].startswith("nginx"), (key, log)
    assert rows[("order", "nginx + granian 1x8")]["cpu"]["router"] > 0, log
    assert set(figures["ratios"]["order"]) == {"granian 1x8", "nginx + granian 1x8"}, log
