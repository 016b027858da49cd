"""CPU instructions per persisted order, counted by valgrind's callgrind.

Throughput and CPU time on a shared 2-core machine vary by ±10 % from one run to the
next, more than most single changes to the order path are worth. An instruction count
does not: callgrind counts the instructions the process executes, whatever else the
machine is doing. This script runs the order path of bench/orders.py (`order_place`,
one client, one book, realtime receivers on, the same seeded flow) under callgrind
once with no orders and once with N orders after the same warm-up, and reports the
difference divided by N: the application's instructions per order (PostgreSQL's own
work is in another process and not counted; waiting is not counted). It does so for
orders placed one per transaction (`order_place`, as one client's are) and for groups
of 8 in one transaction (what the group commit's leader runs when 8 clients wait: the
same function, `_place_together`, without the threads, so that the same orders go
into the same transactions on every run).

Usage::

    python bench/instructions.py [--orders 320] [--warmup 100] [--groups 1,8] [--json PATH]

A/B: run it in two work trees (`git worktree add /tmp/before <rev>`, each with its own
`BENCH_DATABASE_URL`) and compare. The count repeats to within about 0.1 % for the
same code; valgrind makes the run about 50 times slower (a few minutes).

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench), migrated first; its data is
overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as ob  # noqa: E402


def place(orders: int, warmup: int, group: int) -> None:
    """The measured process: set up, warm up, then place `orders` orders, `group` to a
    transaction."""
    ob.setup_django(os.environ.get("BENCH_DATABASE_URL", ob.DEFAULT_DB), migrate=False)
    fx = ob.make_fixture(64, with_tokens=False)
    ob.set_broadcast(True)
    # (A trade's ticker is read by another thread after the commit
    # (realtime.account_updates), at most 4 times a second a book: not counted here.)
    ob.reset_data(fx)
    ob._one_book_orders(fx, warmup, seed=1, each=None)
    if group == 1:
        ob._one_book_orders(fx, orders, seed=2, each=None)
        return
    ob.one_book_groups(fx, orders, group, seed=2)


def counted(orders: int, warmup: int, group: int, out_dir: Path) -> int:
    """Instructions of a whole `place(orders, warmup, group)` process, under callgrind."""
    out = out_dir / f"callgrind.{orders}.{group}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--place",
        str(orders),
        "--warmup",
        str(warmup),
        "--group",
        str(group),
    ]
    # The same hash seed on every run: set and dict iteration orders, and so the
    # instructions, repeat.
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the run with {orders} orders failed")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=320)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--groups", default="1,8", help="orders per transaction, each measured (1,8)")
    ap.add_argument("--json", type=Path, help="write the result here too")
    ap.add_argument("--place", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--group", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.place is not None:
        place(args.place, args.warmup, args.group)
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    groups = [int(g) for g in args.groups.split(",")]
    db_url = os.environ.get("BENCH_DATABASE_URL", ob.DEFAULT_DB)
    ob.ensure_database(db_url)
    ob.migrate_subprocess(db_url)
    t0 = time.monotonic()
    result: dict = {"orders": args.orders, "warmup": args.warmup, "git": ob.git_state()}
    with tempfile.TemporaryDirectory() as tmp:
        # The runs one after the other: they share the database.
        base = counted(0, args.warmup, 1, Path(tmp))
        ob.log(f"setup and {args.warmup} warm-up orders: {base:,} instructions")
        for group in groups:
            total = counted(args.orders, args.warmup, group, Path(tmp))
            per_order = (total - base) / args.orders
            result[f"instructions_per_order_group_{group}"] = round(per_order)
            ob.log(
                f"{args.orders} orders, {group} a transaction: {total - base:,} instructions,"
                f" {per_order:,.0f} per order ({time.monotonic() - t0:.0f} s)"
            )
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
