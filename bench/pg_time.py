"""Where PostgreSQL's time goes per order, statement by statement.

The order path of the matcher (`_place_together`: the orders of bench/orders.py's flow
on one book, `--group` to a transaction, as a matcher's batch), run from one thread with
the realtime receivers off, with `log_min_duration_statement = 0` set for its own
session: PostgreSQL then logs the time of every statement it ran for it (parse, bind and
execute apart; COMMIT's includes the wait for the WAL to reach the disk). The log lines
of that backend are summed by statement (verb and table) and divided by the orders.

Usage::

    python bench/pg_time.py [--orders 600] [--group 6] [--log /var/log/postgresql/postgresql-15-main.log]

It needs to read the server's log (run as root or as postgres) and a superuser
connection (to set the logging for its session). The database is
``$BENCH_DATABASE_URL`` (default postgres://postgres@127.0.0.1:5432/dexsite_pgtime),
created and migrated if missing; its data is overwritten.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as ob  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_pgtime"
DEFAULT_LOG = "/var/log/postgresql/postgresql-15-main.log"
LINE = re.compile(
    r"\[(?P<pid>\d+)\].*duration: (?P<ms>[\d.]+) ms\s+"
    r"(?:(?P<phase>parse|bind|execute) [^:]*|statement): (?P<sql>.*)$"
)


def shape(sql: str) -> str:
    words = sql.replace('"', "").split()
    head = words[0].upper() if words else ""
    if head == "INSERT":
        return f"INSERT {words[2]}"
    if head == "UPDATE":
        return f"UPDATE {words[1]}"
    if head == "SELECT":
        tables = [words[k + 1] for k in range(len(words) - 1) if words[k].upper() == "FROM"]
        lock = " FOR UPDATE" if "FOR UPDATE" in sql.upper() else ""
        return f"SELECT {tables[0] if tables else ''}{lock}"
    return head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=600)
    ap.add_argument("--group", type=int, default=6)
    ap.add_argument("--log", default=DEFAULT_LOG)
    args = ap.parse_args(argv)

    ob.setup_django(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB), migrate=True)
    from django.db import connection

    fx = ob.make_fixture(64, with_tokens=False)
    ob.set_broadcast(False)
    ob.reset_data(fx)
    ob.one_book_groups(
        fx, args.orders, args.group, seed=1
    )  # warm: rows, caches, prepared statements
    log = Path(args.log)
    offset = log.stat().st_size
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
        cursor.execute("SET log_min_duration_statement = 0")
    started = time.perf_counter()
    ob.one_book_groups(fx, args.orders, args.group, seed=2)
    wall = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("RESET log_min_duration_statement")
    time.sleep(0.5)  # the logger's last lines

    spent: collections.Counter[str] = collections.Counter()
    runs: collections.Counter[str] = collections.Counter()
    with log.open(errors="replace") as f:
        f.seek(offset)
        for line in f:
            m = LINE.search(line)
            if m is None or int(m["pid"]) != pid or "log_min_duration" in m["sql"]:
                continue
            key = shape(m["sql"])
            spent[key] += float(m["ms"])
            if m["phase"] in (None, "execute"):
                runs[key] += 1
    n = args.orders
    total = sum(spent.values())
    print(
        f"{n} orders in groups of {args.group}: {n / wall:.0f} orders/s from one thread; "
        f"PostgreSQL's time {total / n * 1000:.0f} µs an order"
    )
    print("| statement | µs/order | runs/order |\n|---|--:|--:|")
    for key, ms in spent.most_common():
        print(f"| {key} | {ms / n * 1000:.0f} | {runs[key] / n:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
