"""The clock and the index it depends on: it refuses to start with nothing to feed the
index (every index would go stale and funding and liquidations pause without a word),
and every process's /metrics tells each index's age."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from trading.models import IndexPrice
from trading.services.prices import index_set

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_feed_the_clock_exits_non_zero_and_says_why() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("INDEX_FEEDS", "INDEX_MANUAL")}
    # A deployment's defaults: DATABASE_URL set, INDEX_FEEDS unset, so no feed.
    env["DATABASE_URL"] = env.get("DATABASE_URL") or "postgres://nobody@127.0.0.1:1/none"
    result = subprocess.run(
        [sys.executable, "manage.py", "runclock", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no index feed" in result.stderr
    assert "INDEX_FEEDS" in result.stderr and "INDEX_MANUAL=true" in result.stderr


@pytest.mark.django_db
def test_the_clock_runs_nothing_without_a_feed(settings) -> None:
    settings.INDEX_FEEDS, settings.INDEX_MANUAL = [], False
    index_set(underlying="BTC", price=Decimal("64000"), at=timezone.now() - timedelta(hours=1))
    with pytest.raises(CommandError, match="no index feed"):
        call_command("runclock", "--once")
    assert IndexPrice.objects.get(underlying="BTC").source == "manual"  # nothing ran


@pytest.mark.django_db
def test_the_clock_starts_with_a_feed_or_a_hand_on_the_index(settings, capsys) -> None:
    settings.INDEX_FEEDS, settings.INDEX_MANUAL = [], True
    call_command("runclock", "--check")
    assert "set by hand" in capsys.readouterr().out
    settings.INDEX_FEEDS, settings.INDEX_MANUAL = ["trading.feeds.RandomWalkFeed"], False
    call_command("runclock", "--check")
    assert "index feeds: random-walk" in capsys.readouterr().out
    settings.INDEX_FEEDS = ["trading.feeds.NoSuchFeed"]
    with pytest.raises(ImportError):
        call_command("runclock", "--check")


@pytest.mark.django_db
def test_metrics_show_each_index_age() -> None:
    now = timezone.now()
    index_set(underlying="BTC", price=Decimal("64000"), at=now - timedelta(seconds=300))
    index_set(underlying="ETH", price=Decimal("3000"), at=now)
    text = Client().get("/metrics").content.decode()
    ages = {
        m["underlying"]: float(m["age"])
        for m in re.finditer(
            r'^dex_index_age_seconds\{underlying="(?P<underlying>\w+)"\} (?P<age>\S+)$',
            text,
            re.MULTILINE,
        )
    }
    assert set(ages) == {"BTC", "ETH"}, text[:2000]
    assert 300 <= ages["BTC"] < 360
    assert 0 <= ages["ETH"] < 60
    assert "# TYPE dex_index_age_seconds gauge" in text
