"""Running a bench script from the tests, small, on a database of its own (dropped after)
and the test run's Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from trust import procs
from trust.tests.test_chaos_quick import _db_url

ROOT = Path(__file__).resolve().parents[2]


def bench_run(script: str, db_name: str, *args: str) -> subprocess.CompletedProcess:
    """`python bench/<script> <args> --db-url ... --redis-url ...`, its output captured."""
    db_url = _db_url(f"{db_name}_t{os.getpid()}")
    try:
        return subprocess.run(
            [
                sys.executable,
                f"bench/{script}",
                *args,
                "--db-url",
                db_url,
                "--redis-url",
                settings.REDIS_URL,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        procs.database_drop(db_url)
