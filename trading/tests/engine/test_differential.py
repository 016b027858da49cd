"""Differential tests: random order flow through the engine and the naive reference.

Prices stay within a few ticks of a mid so that most orders cross, rest next to each
other or queue at the same level, and three owners make self-trade prevention common.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading.engine.book import (
    BUY,
    FOK,
    GTC,
    IOC,
    POST_ONLY,
    REJECTED,
    SELL,
    BookError,
    OrderBook,
)
from trading.tests.engine.reference import ReferenceBook

MID = 100
SPREAD = 5
OWNERS = ("alice", "bob", "carol")
LIMIT_TIFS = (GTC, GTC, IOC, FOK, POST_ONLY)
MARKET_TIFS = (GTC, IOC, FOK)

Depth = tuple[list[tuple[int, int]], list[tuple[int, int]]]


def _fill_tuples(result: Any) -> list[tuple[Hashable, Hashable, int, int, int]]:
    return [(f.maker_id, f.maker_owner, f.price, f.qty, f.maker_remaining) for f in result.fills]


def _outcome(result: Any) -> tuple[Any, ...]:
    return (
        result.status,
        result.filled,
        result.remaining,
        result.rested,
        result.reject_reason,
        _fill_tuples(result),
        list(result.stp_canceled),
        dict(result.bid_deltas),
        dict(result.ask_deltas),
    )


def _as_depth(bids: dict[int, int], asks: dict[int, int]) -> Depth:
    return sorted(bids.items(), reverse=True), sorted(asks.items())


def _apply(levels: dict[int, int], deltas: dict[int, int]) -> None:
    for price, total in deltas.items():
        assert total >= 0, f"negative level total {total} at {price}"
        if total:
            levels[price] = total
        else:
            # A 0 delta must refer to a level that existed; otherwise it is not exact.
            assert price in levels, f"delta removes level {price} that was not there"
            del levels[price]


class Harness:
    """Drives both books in lockstep and checks them against each other.

    `shadow_*` is the depth a market-data consumer would hold if it only ever saw the
    deltas and cancel results; it must always equal the real depth.
    """

    def __init__(self, full_check_every: int = 1) -> None:
        self.book = OrderBook()
        self.ref = ReferenceBook()
        self.full_check_every = full_check_every
        self.steps = 0
        self.next_id = 0
        self.known_ids: list[int] = []
        self.original_qty: dict[int, int] = {}
        self.traded: defaultdict[int, int] = defaultdict(int)
        self.shadow_bids: dict[int, int] = {}
        self.shadow_asks: dict[int, int] = {}
        self.counts: defaultdict[str, int] = defaultdict(int)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def seed(self, owner: str, side: str, offset: int, qty: int) -> None:
        # Seeds sit strictly on their own side of the mid so add_resting cannot cross.
        price = MID - offset if side == BUY else MID + offset
        order_id = self.new_id()
        self.book.add_resting(order_id, owner, side, price, qty)
        self.ref.add_resting(order_id, owner, side, price, qty)
        self.known_ids.append(order_id)
        self.original_qty[order_id] = qty
        shadow = self.shadow_bids if side == BUY else self.shadow_asks
        shadow[price] = shadow.get(price, 0) + qty
        self._after_step()

    def place(
        self,
        owner: str,
        side: str,
        qty: int,
        price: int | None,
        tif: str,
        order_id: int | None = None,
    ) -> None:
        fresh = order_id is None
        if order_id is None:
            order_id = self.new_id()
        before = self.book.depth() if not fresh else None
        got = self._call(lambda b: b.place(order_id, owner, side, qty, price, tif))
        if got is None:
            assert not fresh, "a fresh, well-formed order was refused"
            assert self.book.depth() == before
            self.counts["refused"] += 1
            self._after_step()
            return
        assert fresh, f"duplicate id {order_id} was accepted"
        res, ref_res = got
        assert _outcome(res) == _outcome(ref_res)

        self.known_ids.append(order_id)
        self.original_qty[order_id] = qty
        assert res.filled + res.remaining == qty
        assert sum(f.qty for f in res.fills) == res.filled
        assert all(f.qty > 0 for f in res.fills)
        if res.status == REJECTED:
            assert not res.changed and not res.fills and not res.stp_canceled
        if price is None:
            assert not res.rested

        self.traded[order_id] += res.filled
        for f in res.fills:
            self.traded[f.maker_id] += f.qty
            assert self.traded[f.maker_id] <= self.original_qty[f.maker_id]
            assert f.maker_remaining == self.original_qty[f.maker_id] - self.traded[f.maker_id]
            assert f.maker_owner != owner, "self-trade"

        _apply(self.shadow_bids, res.bid_deltas)
        _apply(self.shadow_asks, res.ask_deltas)
        self.counts[res.status] += 1
        self.counts["fills"] += len(res.fills)
        self.counts["stp"] += len(res.stp_canceled)
        self._after_step()

    def cancel(self, order_id: Hashable) -> None:
        got = self._call(lambda b: b.cancel(order_id))
        assert got is not None
        res, ref_res = got
        if ref_res is None:
            assert res is None
            self.counts["cancel_miss"] += 1
        else:
            assert res is not None
            order, total = res
            ref_order, ref_total = ref_res
            assert (order.order_id, order.owner, order.side, order.price, order.qty, total) == (
                ref_order.order_id,
                ref_order.owner,
                ref_order.side,
                ref_order.price,
                ref_order.qty,
                ref_total,
            )
            shadow = self.shadow_bids if order.side == BUY else self.shadow_asks
            _apply(shadow, {order.price: total})
            self.counts["cancel_hit"] += 1
        self._after_step()

    def rekey(self, old_id: Hashable, new_id: Hashable) -> None:
        got = self._call(lambda b: b.rekey(old_id, new_id))
        if got is None:
            self.counts["rekey_refused"] += 1
        else:
            self.known_ids.append(new_id)
            self.original_qty[new_id] = self.original_qty[old_id]
            self.traded[new_id] = self.traded[old_id]
            self.counts["rekey"] += 1
        self._after_step()

    def probe(self, side: str, qty: int, price: int | None, owner: str) -> None:
        assert self.book.sweep(side, qty, price, owner) == self.ref.sweep(side, qty, price, owner)

    def _call(self, action: Any) -> tuple[Any, Any] | None:
        """Run `action` on both books; both must raise BookError or neither."""
        outcomes = []
        for b in (self.book, self.ref):
            try:
                outcomes.append(action(b))
            except BookError:
                outcomes.append(BookError)
        if BookError in outcomes:
            assert outcomes == [BookError, BookError], f"only one book refused: {outcomes!r}"
            return None
        return outcomes[0], outcomes[1]

    def _after_step(self) -> None:
        self.steps += 1
        bid, ask = self.book.best_bid(), self.book.best_ask()
        if bid is not None and ask is not None:
            assert bid < ask, f"crossed book: bid {bid} >= ask {ask}"
        if self.steps % self.full_check_every == 0:
            self.full_check()

    def full_check(self) -> None:
        depth = self.book.depth()
        assert depth == self.ref.depth()
        assert depth == _as_depth(self.shadow_bids, self.shadow_asks)
        assert (self.book.best_bid(), self.book.best_ask()) == (
            self.ref.best_bid(),
            self.ref.best_ask(),
        )
        assert self.book.depth(2) == self.ref.depth(2)
        ref_orders = {o.order_id: (o.owner, o.side, o.price, o.qty) for o in self.ref.resting}
        book_orders = {
            oid: (o.owner, o.side, o.price, o.qty) for oid, o in self.book.orders.items()
        }
        assert book_orders == ref_orders
        for oid, (_, _, _, qty) in book_orders.items():
            assert 0 < qty == self.original_qty[oid] - self.traded[oid]
        self._check_engine_structure()

    def _check_engine_structure(self) -> None:
        # White-box: level totals are cached in the engine, so a drift would only show
        # up much later in depth; catch it where it happens.
        seen = 0
        for book_side, sign, side in ((self.book.bids, -1, BUY), (self.book.asks, 1, SELL)):
            for key, lvl in book_side.items():
                assert lvl.orders, f"empty level {sign * key} left on {side}"
                assert lvl.total == sum(o.qty for o in lvl.orders.values())
                for oid, o in lvl.orders.items():
                    assert self.book.orders[oid] is o
                    assert (o.side, o.price) == (side, sign * key)
                seen += len(lvl.orders)
        assert seen == len(self.book.orders)


# -- hypothesis ----------------------------------------------------------------------

prices = st.integers(MID - SPREAD, MID + SPREAD)
sides = st.sampled_from((BUY, SELL))
owners = st.sampled_from(OWNERS)
qtys = st.integers(1, 10)

limit_orders = st.tuples(st.just("place"), owners, sides, qtys, prices, st.sampled_from(LIMIT_TIFS))
market_orders = st.tuples(
    st.just("place"), owners, sides, qtys, st.none(), st.sampled_from(MARKET_TIFS)
)
# The index is resolved against the ids known at run time, so it can hit a resting,
# filled, cancelled or STP-cancelled order; a negative index is an id never issued.
cancels = st.tuples(st.just("cancel"), st.integers(-1, 200))
duplicates = st.tuples(st.just("duplicate"), st.integers(0, 200), owners, sides, qtys)
# Mostly the latest order onto a fresh id, the one rename the service does and that must
# work; the rest are refusals that must leave both books untouched.
rekeys = st.tuples(
    st.just("rekey"),
    st.one_of(st.just(-1), st.just(-1), st.integers(-3, 200)),
    st.sampled_from((False, False, False, True)),
)
probes = st.tuples(
    st.just("probe"), sides, st.integers(1, 40), st.one_of(st.none(), prices), owners
)

actions = st.one_of(
    limit_orders,
    limit_orders,
    limit_orders,
    market_orders,
    cancels,
    duplicates,
    probes,
    rekeys,
)
# Left alone, hypothesis favours flows of two or three actions, which rarely build a
# book deep enough to sweep; a floor on the length keeps every example meaningful.
flows = st.lists(actions, min_size=20, max_size=120)
seeds = st.lists(st.tuples(owners, sides, st.integers(1, SPREAD), qtys), max_size=12)


def run(harness: Harness, steps: list[tuple[Any, ...]]) -> None:
    for step in steps:
        kind = step[0]
        if kind == "place":
            _, owner, side, qty, price, tif = step
            harness.place(owner, side, qty, price, tif)
        elif kind == "cancel":
            index = step[1]
            if index < 0 or not harness.known_ids:
                harness.cancel(f"unknown-{index}")
            else:
                harness.cancel(harness.known_ids[index % len(harness.known_ids)])
        elif kind == "rekey":
            # -1 is the latest order: the service renames right after placing, and that
            # is the one case where the rename must succeed.
            _, index, onto_resting = step
            if not harness.known_ids:
                continue
            old_id = harness.known_ids[index % len(harness.known_ids)]
            resting = [o.order_id for o in harness.ref.resting]
            onto = resting[index % len(resting)] if onto_resting and resting else None
            new_id = harness.new_id() if onto is None else onto
            harness.rekey(old_id, new_id)
        elif kind == "cancel_id":
            harness.cancel(step[1])
        elif kind == "duplicate":
            _, index, owner, side, qty = step
            resting = [o.order_id for o in harness.ref.resting]
            if resting:
                harness.place(owner, side, qty, MID, GTC, order_id=resting[index % len(resting)])
        else:
            _, side, qty, price, owner = step
            harness.probe(side, qty, price, owner)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=seeds, steps=flows)
def test_random_flow_matches_reference(
    initial: list[tuple[str, str, int, int]], steps: list[tuple[Any, ...]]
) -> None:
    harness = Harness()
    for owner, side, offset, qty in initial:
        harness.seed(owner, side, offset, qty)
    run(harness, steps)


# A single owner per side rules out STP, so these examples spend their budget on deep
# multi-level sweeps and FIFO queues instead.
@settings(deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.just("place"),
            st.just("x"),
            sides,
            st.integers(1, 30),
            st.one_of(prices, st.none()),
            st.sampled_from((GTC, GTC, GTC, IOC, FOK)),
        ).map(lambda s: (*s[:1], "buyer" if s[2] == BUY else "seller", *s[2:])),
        min_size=20,
        max_size=120,
    )
)
def test_two_sided_flow_without_stp(steps: list[tuple[Any, ...]]) -> None:
    run(Harness(), steps)


# -- seeded long run -----------------------------------------------------------------


def random_command(rng: random.Random, harness: Harness) -> tuple[Any, ...]:
    roll = rng.random()
    if roll < 0.12:
        resting = harness.ref.resting
        # Mostly live orders, so cancels keep the book from growing without bound.
        if resting and rng.random() < 0.85:
            return ("cancel_id", rng.choice(resting).order_id)
        return ("cancel", rng.randrange(-1, max(1, len(harness.known_ids))))
    if roll < 0.16:
        if rng.random() < 0.8:
            return ("rekey", -1, False)
        return ("rekey", rng.randrange(-3, 1000), rng.random() < 0.5)
    if roll < 0.18:
        return ("duplicate", rng.randrange(1000), rng.choice(OWNERS), rng.choice((BUY, SELL)), 1)
    if roll < 0.21:
        price = rng.choice((None, MID + rng.randint(-SPREAD, SPREAD)))
        return ("probe", rng.choice((BUY, SELL)), rng.randint(1, 40), price, rng.choice(OWNERS))
    owner = rng.choice(OWNERS)
    side = rng.choice((BUY, SELL))
    qty = rng.choice((1, 1, 2, 3, 5, 8, 13, 25))
    if roll < 0.29:
        return ("place", owner, side, qty, None, rng.choice(MARKET_TIFS))
    # Skew passive: buyers mostly bid below the mid and sellers ask above it, so the
    # book builds depth that aggressive orders then sweep through.
    offset = rng.randint(-2, SPREAD)
    price = MID - offset if side == BUY else MID + offset
    return ("place", owner, side, qty, price, rng.choice(LIMIT_TIFS))


# Outcomes a random stream must keep producing, lest the generator silently stop
# exercising the interesting paths.
EXERCISED = (
    "FILLED",
    "PARTIALLY_FILLED",
    "NEW",
    "CANCELED",
    "REJECTED",
    "cancel_hit",
    "rekey",
    "rekey_refused",
)


def seeded_run(seed: int, commands: int, check_every: int = 100) -> Harness:
    """`commands` random commands from `seed` through engine and reference in lockstep,
    compared after each and in full every `check_every` steps and at the end."""
    rng = random.Random(seed)
    harness = Harness(full_check_every=check_every)
    for _ in range(commands):
        run(harness, [random_command(rng, harness)])
    harness.full_check()
    return harness


def test_seeded_long_run_matches_reference() -> None:
    c = seeded_run(20240611, 20_000).counts
    for key in EXERCISED:
        assert c[key] > 200, (key, dict(c))
    assert c["fills"] > 4_000 and c["stp"] > 500 and c["refused"] > 50, dict(c)
