"""Clock jobs at scale: one funding over N positions, and liquidation sweeps over N
accounts (a healthy scan, then a sweep that liquidates them all), on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dexsite_bench_risk python bench/risk.py [--accounts 1000]

Prints medians over --repeat runs of the healthy scan; the liquidating sweep runs once
(it changes the state). Runs the invariant checker at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

from ledger.services import INSURANCE_ACCOUNT

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dexsite_bench_risk")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dexsite.settings")
os.environ.setdefault("INDEX_FEEDS", "")

D = Decimal


def ensure_database(url: str) -> None:
    """Start from an empty database of the benchmark's own."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from ledger.services import system_account
    from trading.invariants import check_invariants
    from trading.models import Book, FundingSample
    from trading.orders.place import order_place
    from trading.services.books import engine_cache_clear
    from trading.services.funding import funding_settle
    from trading.services.liquidation import liquidations_run
    from trading.services.markets import leverage_set
    from trading.services.prices import index_set, marks_refresh
    from trading.tests.factories import MarketFactory, fund

    print(f"database {connection.settings_dict['NAME']}; resetting", flush=True)
    call_command("migrate", verbosity=0)
    engine_cache_clear()
    perp = MarketFactory(max_leverage=D("20"), funding_interval=8 * 3600)
    index_set(underlying="BTC", price=D("64000"))
    Book.objects.filter(market=perp).update(mark_price=D("64000"))
    fund(system_account(INSURANCE_ACCOUNT), "1000000")
    # No password: hashing one per account would dominate the set-up.
    maker = User.objects.create(username="bench-maker")
    fund(maker, "1000000000")

    t0 = time.perf_counter()
    traders = []
    for i in range(args.accounts):
        u = User.objects.create(username=f"bench-{i}")
        fund(u, "3300")
        leverage_set(trader=u, market=perp, mode="PAPER", leverage=D("20"))
        order_place(
            trader=maker,
            market="BTC-PERP",
            mode="PAPER",
            side="SELL",
            type="LIMIT",
            price=D("64000"),
            qty=D("1"),
        )
        order_place(
            trader=u, market="BTC-PERP", mode="PAPER", side="BUY", type="MARKET", qty=D("1")
        )
        traders.append(u)
        if (i + 1) % 200 == 0:
            print(f"  opened {i + 1} positions ({time.perf_counter() - t0:.1f} s)", flush=True)

    from django.utils import timezone

    book = Book.objects.get(market=perp, mode="PAPER")
    funding_times = []
    for r in range(args.repeat):
        now = timezone.now()
        index_set(underlying="BTC", price=D("64000"))  # fresh, or funding pauses
        FundingSample.objects.create(book=book, premium=D("0.0002"), at=now)
        Book.objects.filter(pk=book.pk).update(next_funding_at=now)
        t = time.perf_counter()
        event = funding_settle(book_id=book.pk, now=now)
        funding_times.append(time.perf_counter() - t)
        print(
            f"  funding {r + 1}: {event.positions} positions in {funding_times[-1] * 1000:.0f} ms",
            flush=True,
        )

    scan_times = []
    for r in range(args.repeat):
        index_set(underlying="BTC", price=D("64000"))
        t = time.perf_counter()
        done = liquidations_run()
        scan_times.append(time.perf_counter() - t)
        assert done == []
        print(
            f"  healthy scan {r + 1}: {args.accounts} accounts in {scan_times[-1] * 1000:.0f} ms",
            flush=True,
        )

    # A bid wall to take the liquidations, then the index falls under every account.
    order_place(
        trader=maker,
        market="BTC-PERP",
        mode="PAPER",
        side="BUY",
        type="LIMIT",
        price=D("60900"),
        qty=D(args.accounts),
    )
    index_set(underlying="BTC", price=D("61000"))
    marks_refresh()
    t = time.perf_counter()
    done = liquidations_run()
    sweep = time.perf_counter() - t
    print(f"  liquidating sweep: {len(done)} accounts in {sweep:.2f} s", flush=True)
    problems = check_invariants()
    print(f"invariants: {'OK' if not problems else problems[:5]}")
    print()
    print("| job | accounts/positions | median | per item |")
    print("|---|---|---|---|")
    f = statistics.median(funding_times)
    s = statistics.median(scan_times)
    print(
        f"| funding settlement | {args.accounts} positions | {f * 1000:.0f} ms | {f / args.accounts * 1e6:.0f} µs |"
    )
    print(
        f"| liquidation scan (none due) | {args.accounts} accounts | {s * 1000:.0f} ms | {s / args.accounts * 1e6:.0f} µs |"
    )
    print(
        f"| liquidation sweep (all due) | {len(done)} accounts | {sweep * 1000:.0f} ms (1 run) | {sweep / max(1, len(done)) * 1000:.1f} ms |"
    )


if __name__ == "__main__":
    main()
