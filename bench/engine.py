"""Throughput of the in-memory matching engine against public pure-Python engines.

Runs the same seeded order flow through three engines in the same process:

* ours: ``trading.engine.OrderBook`` (integer ticks and lots, in-process, no I/O);
* ``lightmatchingengine`` (PyPI, 2019.1.4): dict of price -> list, ``min()``/``max()``
  over the level keys for the best price, linear scan on cancel;
* ``pyorderbook`` (PyPI, 0.4.9): heap of levels, ``Decimal`` prices, ``uuid4`` ids.

The flow: limit orders around the touch, about half of them marketable (priced through
the opposite best, so they cross), and every fifth action a cancel of a random live
order. It is generated once, before any timing, by replaying it through a reference book
(our engine, untimed), so every cancel names an order that is still live in any correct
price-time-priority engine. Every owner is distinct, so our self-trade prevention never
fires and all three engines must end in the same state. After each timed run the
benchmark checks that each engine produced the expected number of maker fills, the
expected traded volume and the exact same final depth (price -> quantity per side);
any mismatch aborts the run. For ours that check is against its own replay; the two
independent engines agreeing with it, fill for fill, is what makes it meaningful.

Timing covers only the engines' calls through thin adapters (same driver loop for all);
flow generation and checks are outside it. It is the CPU time of the process (wall time
is recorded too): on a 2-core machine shared with other work, CPU time does not count
the waits for a core. The garbage collector stays on, as in a server. Results are
medians over the repetitions; the engine order rotates every repetition so that none
always runs first or last.

Usage::

    python bench/engine.py [--orders N] [--repeat R] [--seed S] [--json out.json]
                           [--profile]

No Django and no database: only ``trading/engine`` is imported.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trading.engine import BUY, SELL, OrderBook  # noqa: E402

# An action is (kind, order_id, is_buy, price, qty); kind PLACE or CANCEL. For a cancel
# only order_id is meaningful.
PLACE = 0
CANCEL = 1
Action = tuple[int, int, bool, int, int]
Depth = dict[tuple[str, int], int]

START_MID = 1_000_000  # ticks; far from 0 so the random walk never reaches it
SYMBOL = "BENCH"


# -- the flow -------------------------------------------------------------------------


@dataclass
class Flow:
    actions: list[Action]
    places: int
    cancels: int
    crossing: int  # placed orders that traded at least one lot on arrival
    fills: int  # maker fills
    volume: int  # lots traded
    depth: Depth  # final (side, price) -> total qty
    resting_orders: int
    mean_resting_orders: float
    mean_levels: float


def make_flow(n: int, seed: int, book: int = 1_000) -> Flow:
    """Generate `n` actions. Every fifth action (index 4, 9, ...) cancels a random live
    order; the others are limit orders, half of them priced through the opposite best
    (crossing), half resting at or behind their own best (0-40 ticks, mean ~4). The
    crossing orders' size steers the book towards `book` resting orders."""
    rng = random.Random(seed)
    ref = OrderBook()
    live: list[int] = []  # live order ids, swap-removed through `pos`
    pos: dict[int, int] = {}

    def add_live(oid: int) -> None:
        pos[oid] = len(live)
        live.append(oid)

    def drop_live(oid: int) -> None:
        i = pos.pop(oid)
        last = live.pop()
        if last != oid:
            live[i] = last
            pos[last] = i

    actions: list[Action] = []
    next_id = 1
    places = cancels = crossing = fills = volume = 0
    sum_orders = sum_levels = samples = 0
    for i in range(n):
        if i % 5 == 4 and live:
            oid = live[rng.randrange(len(live))]
            drop_live(oid)
            ref.cancel(oid)
            actions.append((CANCEL, oid, False, 0, 0))
            cancels += 1
            continue
        is_buy = rng.random() < 0.5
        best_bid = ref.best_bid()
        best_ask = ref.best_ask()
        if best_bid is None and best_ask is None:
            best_bid, best_ask = START_MID - 1, START_MID + 1
        elif best_bid is None:
            best_bid = best_ask - 2
        elif best_ask is None:
            best_ask = best_bid + 2
        if rng.random() < 0.5:
            # Marketable: through the opposite best by 0-3 ticks (may sweep levels). Its
            # size keeps the book near `book` resting orders: larger while the book is
            # above the target, smaller while below.
            qty = rng.randint(1, 150) if len(live) > book else rng.randint(1, 30)
            price = best_ask + rng.randint(0, 3) if is_buy else best_bid - rng.randint(0, 3)
        else:
            # Passive: at or behind our own best, mostly close to it.
            qty = rng.randint(1, 100)
            back = min(int(rng.expovariate(0.25)), 40)
            price = best_bid - back if is_buy else best_ask + back
        oid = next_id
        next_id += 1
        res = ref.place(oid, oid, BUY if is_buy else SELL, qty, price)
        for f in res.fills:
            if not f.maker_remaining:
                drop_live(f.maker_id)
        if res.rested:
            add_live(oid)
        if res.filled:
            crossing += 1
        fills += len(res.fills)
        volume += res.filled
        actions.append((PLACE, oid, is_buy, price, qty))
        places += 1
        if i % 64 == 0:
            sum_orders += len(ref.orders)
            sum_levels += len(ref.bids) + len(ref.asks)
            samples += 1
    bids, asks = ref.depth()
    depth = {(BUY, p): q for p, q in bids} | {(SELL, p): q for p, q in asks}
    return Flow(
        actions=actions,
        places=places,
        cancels=cancels,
        crossing=crossing,
        fills=fills,
        volume=volume,
        depth=depth,
        resting_orders=len(ref.orders),
        mean_resting_orders=sum_orders / max(samples, 1),
        mean_levels=sum_levels / max(samples, 1),
    )


# -- adapters -------------------------------------------------------------------------


class Adapter(Protocol):
    name: str
    fills: int
    volume: int

    def place(self, oid: int, is_buy: bool, price: int, qty: int) -> None: ...

    def cancel(self, oid: int) -> None: ...

    def depth(self) -> Depth: ...

    def resting_orders(self) -> int: ...


class Ours:
    """trading.engine.OrderBook; owner = order id, so no self-trade prevention fires."""

    name = "ours"
    package = None

    def __init__(self) -> None:
        self.book = OrderBook()
        self.fills = 0
        self.volume = 0

    def place(self, oid: int, is_buy: bool, price: int, qty: int) -> None:
        r = self.book.place(oid, oid, BUY if is_buy else SELL, qty, price)
        if r.fills:
            self.fills += len(r.fills)
            self.volume += r.filled

    def cancel(self, oid: int) -> None:
        self.book.cancel(oid)

    def depth(self) -> Depth:
        bids, asks = self.book.depth()
        return {(BUY, p): q for p, q in bids} | {(SELL, p): q for p, q in asks}

    def resting_orders(self) -> int:
        return len(self.book.orders)


class LightMatchingEngine:
    """lightmatchingengine: ids are assigned by the engine (1, 2, ...), which is exactly
    the flow's numbering, so a cancel passes our id straight through. Its trade list holds
    one aggressor trade per level plus one trade per maker; we count the maker ones."""

    name = "lightmatchingengine"
    package = "lightmatchingengine"

    def __init__(self) -> None:
        from lightmatchingengine.lightmatchingengine import (
            LightMatchingEngine as Engine,
        )

        self.engine = Engine()
        self.fills = 0
        self.volume = 0

    def place(self, oid: int, is_buy: bool, price: int, qty: int) -> None:
        order, trades = self.engine.add_order(SYMBOL, price, qty, 1 if is_buy else 2)
        if trades:
            taker = order.order_id
            for t in trades:
                if t.order_id != taker:
                    self.fills += 1
            self.volume += order.cum_qty

    def cancel(self, oid: int) -> None:
        self.engine.cancel_order(oid, SYMBOL)

    def depth(self) -> Depth:
        book = self.engine.order_books[SYMBOL]
        out: Depth = {}
        for side, levels in ((BUY, book.bids), (SELL, book.asks)):
            for p, orders in levels.items():
                out[(side, p)] = sum(o.leaves_qty for o in orders)
        return out

    def resting_orders(self) -> int:
        book = self.engine.order_books[SYMBOL]
        return sum(len(v) for v in book.bids.values()) + sum(len(v) for v in book.asks.values())

    def check_ids(self, places: int) -> None:
        if self.engine.curr_order_id != places:
            raise SystemExit("lightmatchingengine: engine ids drifted from the flow's")


class PyOrderBook:
    """pyorderbook: an order is an object with a uuid4 id and a Decimal price, built by
    the caller (timed: it is the API's way to submit an order); cancel takes the object,
    so the adapter keeps id -> Order for live orders. Its cancel leaves an emptied level
    in the heap until a taker reaches it (lazy deletion); correctness is unaffected."""

    name = "pyorderbook"
    package = "pyorderbook"

    def __init__(self) -> None:
        import pyorderbook

        self.Order = pyorderbook.Order
        self.BID = pyorderbook.Side.BID
        self.ASK = pyorderbook.Side.ASK
        self.book = pyorderbook.Book()
        self.orders: dict[int, Any] = {}
        self.fills = 0
        self.volume = 0

    def place(self, oid: int, is_buy: bool, price: int, qty: int) -> None:
        o = self.Order(self.BID if is_buy else self.ASK, SYMBOL, price, qty)
        blotter = self.book.match(o)
        if blotter.trades:
            self.fills += len(blotter.trades)
            self.volume += qty - o.quantity
        if o.quantity:
            self.orders[oid] = o

    def cancel(self, oid: int) -> None:
        self.book.cancel(self.orders.pop(oid))

    def depth(self) -> Depth:
        out: Depth = {}
        for o in self.book.order_map.values():
            key = (BUY if o.side == self.BID else SELL, int(o.price))
            out[key] = out.get(key, 0) + o.quantity
        return out

    def resting_orders(self) -> int:
        return len(self.book.order_map)


ENGINES: list[type[Ours] | type[LightMatchingEngine] | type[PyOrderBook]] = [
    Ours,
    LightMatchingEngine,
    PyOrderBook,
]


# -- running --------------------------------------------------------------------------


def drive(adapter: Adapter, actions: list[Action]) -> tuple[float, float]:
    """Feed every action to `adapter`; returns (CPU seconds, wall seconds).

    CPU time of this process is what the comparison uses: on a small shared machine it
    does not count the time the process waits for a core, wall time does."""
    place = adapter.place
    cancel = adapter.cancel
    gc.collect()
    w0 = time.perf_counter()
    c0 = time.process_time()
    for kind, oid, is_buy, price, qty in actions:
        if kind:
            cancel(oid)
        else:
            place(oid, is_buy, price, qty)
    c1 = time.process_time()
    w1 = time.perf_counter()
    return c1 - c0, w1 - w0


def verify(adapter: Adapter, flow: Flow) -> dict[str, int]:
    """Check the engine really matched: maker fills, volume and final depth must be
    those of the reference replay. Returns the counts it checked."""
    got = {
        "fills": adapter.fills,
        "volume": adapter.volume,
        "resting_orders": adapter.resting_orders(),
    }
    want = {"fills": flow.fills, "volume": flow.volume, "resting_orders": flow.resting_orders}
    problems = [f"{k}: got {got[k]}, expected {want[k]}" for k in got if got[k] != want[k]]
    depth = {k: v for k, v in adapter.depth().items() if v}
    if depth != flow.depth:
        diff = set(depth.items()) ^ set(flow.depth.items())
        problems.append(f"final depth differs on {len(diff)} (side, price, qty) entries")
    check_ids = getattr(adapter, "check_ids", None)
    if check_ids:
        check_ids(flow.places)
    if problems:
        raise SystemExit(f"{adapter.name}: sanity check failed: " + "; ".join(problems))
    got["levels"] = len(depth)
    return got


def version_of(package: str | None) -> str:
    if package is None:
        return "repo"
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def run(
    n: int, repeat: int, seed: int, book: int = 1_000, out: Callable[[str], None] = print
) -> dict[str, Any]:
    """Generate the flow, run every engine `repeat` times (alternating the order each
    repetition), verify each run and return the results."""
    out(f"generating flow: {n:,} actions, seed {seed} ...")
    t0 = time.perf_counter()
    flow = make_flow(n, seed, book)
    out(
        f"  {flow.places:,} limit orders ({flow.crossing / flow.places:.1%} crossing), "
        f"{flow.cancels:,} cancels; {flow.fills:,} maker fills, {flow.volume:,} lots traded; "
        f"book ~{flow.mean_resting_orders:,.0f} orders on ~{flow.mean_levels:,.0f} levels "
        f"({time.perf_counter() - t0:.1f}s)"
    )

    # Warm-up: a short prefix through each engine (imports, specialisation).
    warm = flow.actions[: min(5_000, n)]
    for make in ENGINES:
        drive(make(), warm)

    times: dict[str, list[float]] = {make.name: [] for make in ENGINES}
    walls: dict[str, list[float]] = {make.name: [] for make in ENGINES}
    checked: dict[str, dict[str, int]] = {}
    for r in range(repeat):
        k = r % len(ENGINES)
        order = ENGINES[k:] + ENGINES[:k]
        for make in order:
            adapter = make()
            dt, wall = drive(adapter, flow.actions)
            checked[adapter.name] = verify(adapter, flow)
            times[adapter.name].append(dt)
            walls[adapter.name].append(wall)
            out(
                f"  rep {r + 1}/{repeat}  {adapter.name:<20} cpu {dt:6.3f}s wall {wall:6.3f}s "
                f"{n / dt:>9,.0f} orders/s  fills {adapter.fills:,} "
                f"volume {adapter.volume:,} ok"
            )
            del adapter
            gc.collect()

    engines: dict[str, dict[str, Any]] = {}
    for make in ENGINES:
        name = make.name
        ts = times[name]
        med = statistics.median(ts)
        engines[name] = {
            "version": version_of(make.package),
            "cpu_seconds": ts,
            "wall_seconds": walls[name],
            "median_s": med,
            "median_wall_s": statistics.median(walls[name]),
            "median_orders_per_s": n / med,
            "best_orders_per_s": n / min(ts),
            "worst_orders_per_s": n / max(ts),
            "us_per_order": med / n * 1e6,
            **checked[name],
        }
    ours = engines["ours"]["median_orders_per_s"]
    others = {k: v for k, v in engines.items() if k != "ours"}
    fastest = max(others, key=lambda k: others[k]["median_orders_per_s"])
    for v in engines.values():
        v["ours_ratio"] = ours / v["median_orders_per_s"]
    return {
        "config": {"orders": n, "repeat": repeat, "seed": seed, "book": book},
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": _cpus(),
        },
        "flow": {
            "actions": n,
            "places": flow.places,
            "cancels": flow.cancels,
            "crossing": flow.crossing,
            "crossing_fraction": flow.crossing / flow.places,
            "maker_fills": flow.fills,
            "volume": flow.volume,
            "final_resting_orders": flow.resting_orders,
            "mean_resting_orders": flow.mean_resting_orders,
            "mean_levels": flow.mean_levels,
        },
        "engines": engines,
        "fastest_other": fastest,
        "ours_vs_fastest_other": ours / others[fastest]["median_orders_per_s"],
    }


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def table(result: dict[str, Any]) -> str:
    """A Markdown table of the medians."""
    rows = [
        "| engine | version | median orders/s | µs/order | range orders/s (best..worst) "
        "| maker fills | volume (lots) | ours x |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, e in result["engines"].items():
        rows.append(
            f"| {name} | {e['version']} | {e['median_orders_per_s']:,.0f} "
            f"| {e['us_per_order']:.2f} "
            f"| {e['best_orders_per_s']:,.0f}..{e['worst_orders_per_s']:,.0f} "
            f"| {e['fills']:,} | {e['volume']:,} | {e['ours_ratio']:.2f} |"
        )
    return "\n".join(rows)


def profile(n: int, seed: int, book: int = 1_000, top: int = 18) -> str:
    """cProfile our engine alone on the flow; returns the top functions by own time."""
    import cProfile
    import io
    import pstats

    flow = make_flow(n, seed, book)
    adapter = Ours()
    prof = cProfile.Profile()
    prof.enable()
    drive(adapter, flow.actions)
    prof.disable()
    verify(adapter, flow)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=200_000, help="actions in the flow")
    ap.add_argument("--repeat", type=int, default=7, help="runs per engine")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument(
        "--book", type=int, default=1_000, help="resting orders the flow steers towards"
    )
    ap.add_argument("--json", type=Path, help="write the full results here")
    ap.add_argument("--profile", action="store_true", help="cProfile our engine and stop")
    args = ap.parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    if args.profile:
        out(profile(args.orders, args.seed, args.book))
        return 0

    result = run(args.orders, args.repeat, args.seed, args.book, out)
    out("")
    out(
        f"Python {result['machine']['python']} on {result['machine']['cpus']} CPUs; "
        f"{args.orders:,} actions x {args.repeat} runs per engine, medians of CPU time:"
    )
    out(table(result))
    out(
        f"ours vs fastest other ({result['fastest_other']}): {result['ours_vs_fastest_other']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        out(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
