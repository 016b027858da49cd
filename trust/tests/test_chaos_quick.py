"""Short versions of the trust scenarios 3, 4, 5 and 8 (trust/chaos.py, trust/soak.py):
the site served as the Procfile serves it (router, `http` and `ws` roles), on a database
of their own next to the test database, and the test run's Redis. The two scripts run side by side as
subprocesses; each test asserts one scenario's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
    reason="the scenarios run web processes on PostgreSQL and Redis",
)


def _db_url(name: str) -> str:
    db = settings.DATABASES["default"]
    user = urllib.parse.quote(db.get("USER") or "postgres")
    password = db.get("PASSWORD")
    auth = f"{user}:{urllib.parse.quote(password)}" if password else user
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{name}"


def _start(script: str, db_name: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            f"trust/{script}",
            "--quick",
            "--db-url",
            _db_url(db_name),
            "--json",
            str(out),
            *extra,
        ],
        cwd=ROOT,
        env=dict(os.environ, REDIS_URL=settings.REDIS_URL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("trust")
    tag = f"{settings.DATABASES['default']['NAME']}_trust{os.getpid()}"
    runs = {
        "chaos": _start(
            "chaos.py", f"{tag}_chaos", tmp / "chaos.json", "--duration", "3", "--kills", "2"
        ),
        "soak": _start(
            "soak.py", f"{tag}_soak", tmp / "soak.json", "--duration", "8", "--rate", "15"
        ),
    }
    out: dict[str, Any] = {}
    for name, proc in runs.items():
        text, _ = proc.communicate(timeout=240)
        path = tmp / f"{name}.json"
        assert path.exists(), f"{name} wrote no figures:\n{text[-4000:]}"
        out[name] = json.loads(path.read_text())
        out[name]["log"] = text
    return out


def test_concurrency_one_account_two_processes(figures):
    f = figures["chaos"]["concurrency"]
    assert f["5xx"] == 0, figures["chaos"]["log"][-3000:]
    assert f["transport_errors"] == 0
    assert f["accepted"] > 0
    assert f["race_accepted"] == 5, "16 concurrent withdrawals of a fifth: five pass"
    assert f["negative_balances_seen"] == 0
    assert f["fill_problems"] == []
    assert f["invariant_violations"] == []
    assert f["passed"], figures["chaos"]["log"][-3000:]


def _nothing_lost(f: dict[str, Any]) -> None:
    """Two kills, and every acknowledged order in the database once, as told."""
    assert f["kills"] == 2
    assert f["orders_acknowledged"] > 0
    assert f["orders_lost"] == 0
    assert f["duplicates"] == 0
    assert f["acknowledged_state_regressed"] == 0
    assert f["problems"] == [], f["problems"]
    assert f["invariant_violations"] == []


def test_crash_recovery_loses_nothing(figures):
    f = figures["chaos"]["crash"]
    _nothing_lost(f)
    assert all(c["snapshot_seq"] == c["seq_at_kill"] for c in f["cycles"])
    assert f["passed"], figures["chaos"]["log"][-3000:]


def test_matcher_crashes_lose_nothing(figures):
    f = figures["chaos"]["matcher"]
    _nothing_lost(f)
    # The only 5xx is the matcher's 503, and each such order was sent again.
    assert all(k.endswith(" 503") for k in f["503_during_crashes"])
    assert f["passed"], figures["chaos"]["log"][-3000:]


def test_soak_open_model(figures):
    f = figures["soak"]["soak"]
    assert f["requests"] == f["answered"] > 0
    assert f["errors"] == 0, f["errors_detail"]
    assert f["invariant_violations"] == []
    assert len(f["rss_samples"]) >= 2
    assert f["passed"], figures["soak"]["log"][-3000:]
