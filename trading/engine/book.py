"""Price-time priority limit order book over integer ticks and lots.

Each side maps price -> Level in a plain dict; a Level keeps its resting orders in
arrival order in an OrderedDict (O(1) append, pop-front and removal by id) and the
level's total quantity, so depth reads never walk orders. Bids are keyed by negated
price so that on both sides a smaller key is a better price. The order of the levels is
a plain sorted list per side holding the negated keys, so the best level is the last
item: reading it is `ranks[-1]` and removing it is `ranks.pop()`, both O(1) in C, and a
new level is placed with `bisect.insort` (a memmove; new levels are mostly near the
touch, i.e. near the end).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

BUY = "BUY"
SELL = "SELL"
GTC = "GTC"
IOC = "IOC"
FOK = "FOK"
POST_ONLY = "POST_ONLY"
_TIFS = frozenset((GTC, IOC, FOK, POST_ONLY))

# Outcome statuses, named as on the wire.
NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELED = "CANCELED"
REJECTED = "REJECTED"


class BookError(ValueError):
    """An order the book cannot take (duplicate id, unknown side, bad quantity)."""


class RestingOrder:
    __slots__ = ("order_id", "owner", "price", "qty", "reduce_only", "side")

    def __init__(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        price: int,
        qty: int,
        reduce_only: bool = False,
    ):
        self.order_id = order_id
        self.owner = owner
        self.side = side
        self.price = price
        self.qty = qty
        self.reduce_only = reduce_only


class Level:
    __slots__ = ("orders", "total")

    def __init__(self) -> None:
        self.orders: OrderedDict[Hashable, RestingOrder] = OrderedDict()
        self.total = 0


@dataclass(slots=True)
class Fill:
    """One match between the incoming order and a resting maker."""

    maker_id: Hashable
    maker_owner: Hashable
    price: int
    qty: int
    maker_remaining: int


@dataclass(slots=True)
class MatchResult:
    status: str
    filled: int = 0
    remaining: int = 0
    rested: bool = False
    reject_reason: str | None = None
    fills: list[Fill] = field(default_factory=list)
    # Resting orders of the same owner removed by self-trade prevention: (id, qty).
    stp_canceled: list[tuple[Hashable, int]] = field(default_factory=list)
    # New total quantity per touched price level; 0 means the level is gone.
    bid_deltas: dict[int, int] = field(default_factory=dict)
    ask_deltas: dict[int, int] = field(default_factory=dict)
    # Reduce-only resting orders removed because filling them (or the rest of them)
    # would have grown their owner's position: (id, qty removed). One may also have a
    # fill of what still reduced.
    reduce_only_canceled: list[tuple[Hashable, int]] | tuple[()] = ()

    @property
    def changed(self) -> bool:
        return bool(self.bid_deltas or self.ask_deltas)


class OrderBook:
    """One book. Not thread-safe: the caller serialises access (the service does it
    with a row lock on the book)."""

    __slots__ = ("_ask_ranks", "_bid_ranks", "_reduce_only", "asks", "bids", "orders")

    def __init__(self) -> None:
        self.bids: dict[int, Level] = {}  # -price -> Level
        self.asks: dict[int, Level] = {}  # price -> Level
        # Negated keys of each side, ascending: the best level's is last.
        self._bid_ranks: list[int] = []  # prices, ascending
        self._ask_ranks: list[int] = []  # -prices, ascending
        self.orders: dict[Hashable, RestingOrder] = {}
        # Reduce-only orders by owner, oldest first, as they were put on the book; those
        # gone since (filled, cancelled) are dropped when read.
        self._reduce_only: dict[Hashable, list[RestingOrder]] = {}

    # -- reads -------------------------------------------------------------------

    def best_bid(self) -> int | None:
        ranks = self._bid_ranks
        return ranks[-1] if ranks else None

    def best_ask(self) -> int | None:
        ranks = self._ask_ranks
        return -ranks[-1] if ranks else None

    def depth(
        self, levels: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Best-first (price, total qty) per side, at most `levels` each."""
        if levels is not None and levels <= 0:
            return [], []
        bids, asks = self.bids, self.asks
        # The best levels are the last ranks: slice those before reversing, so that a
        # read of a few levels costs a few, however deep the book.
        if levels is None:
            bid_ranks, ask_ranks = self._bid_ranks[::-1], self._ask_ranks[::-1]
        else:
            bid_ranks = self._bid_ranks[-levels:][::-1]
            ask_ranks = self._ask_ranks[-levels:][::-1]
        return (
            [(p, bids[-p].total) for p in bid_ranks],
            [(-r, asks[-r].total) for r in ask_ranks],
        )

    def reduce_only_resting(self, owner: Hashable) -> list[RestingOrder]:
        """The owner's reduce-only orders on the book, oldest first."""
        found = self._reduce_only.get(owner)
        if not found:
            return []
        orders = self.orders
        live = [o for o in found if orders.get(o.order_id) is o]
        if live:
            self._reduce_only[owner] = live
        else:
            del self._reduce_only[owner]
        return live

    def reduce_only_owners(self) -> list[Hashable]:
        """The owners of reduce-only orders on the book: whose positions `place` and
        `sweep` need to know."""
        return [owner for owner in list(self._reduce_only) if self.reduce_only_resting(owner)]

    def level_qty(self, side: str, price: int) -> int:
        book, key = (self.bids, -price) if side == BUY else (self.asks, price)
        lvl = book.get(key)
        return lvl.total if lvl else 0

    def sweep(
        self,
        side: str,
        qty: int,
        price: int | None,
        owner: Hashable,
        position: Mapping[Hashable, int] | None = None,
    ) -> tuple[int, int]:
        """What an order of `side` for `qty` at limit `price` (None: market) could take
        right now: (fillable qty, sum of price*qty). Orders of `owner` are skipped, as
        self-trade prevention would cancel them rather than trade; reduce-only orders
        count only for what they may fill (see `place`)."""
        got = 0
        cost = 0
        took: dict[Hashable, int] = {}
        for level_price, orders in self._opposite_within(side, price):
            for o in orders:
                if o.owner == owner:
                    continue
                available = o.qty
                if position is not None:
                    if o.reduce_only:
                        available = min(available, _reducible(o, position) - took.get(o.owner, 0))
                        if available <= 0:
                            continue
                    took[o.owner] = took.get(o.owner, 0) + min(qty - got, available)
                take = min(qty - got, available)
                got += take
                cost += take * level_price
                if got == qty:
                    return got, cost
        return got, cost

    def resting_within(self, side: str, qty: int, price: int | None) -> list[RestingOrder]:
        """The resting orders opposite `side`, best first, within limit `price` (None:
        market), until they hold `qty` in all: those that orders of `side` for `qty`
        would meet, to read ahead of matching them. (Every owner's counts, in full: a
        taker's own, which self-trade prevention cancels, or a reduce-only one's
        unfillable part, may take its matches further.)"""
        found: list[RestingOrder] = []
        got = 0
        for _, orders in self._opposite_within(side, price):
            for o in orders:
                found.append(o)
                got += o.qty
                if got >= qty:
                    return found
        return found

    def _opposite_within(
        self, side: str, price: int | None
    ) -> Iterator[tuple[int, Iterable[RestingOrder]]]:
        """(price, its resting orders in time priority) of each level opposite `side`,
        best first, as far as limit `price` (None: market) reaches."""
        is_buy = side == BUY
        opposite, ranks = (self.asks, self._ask_ranks) if is_buy else (self.bids, self._bid_ranks)
        for rank in reversed(ranks):
            key = -rank
            level_price = key if is_buy else rank
            if price is not None and (level_price > price if is_buy else level_price < price):
                return
            yield level_price, opposite[key].orders.values()

    # -- writes ------------------------------------------------------------------

    def add_resting(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        price: int,
        qty: int,
        reduce_only: bool = False,
    ) -> None:
        """Put an order on the book without matching (rebuilding a book from storage)."""
        if side != BUY and side != SELL:
            raise BookError(f"unknown side {side!r}")
        if qty <= 0:
            raise BookError("qty must be positive")
        if order_id in self.orders:
            raise BookError(f"duplicate order id {order_id!r}")
        self._rest(RestingOrder(order_id, owner, side, price, qty, reduce_only))

    def place(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        qty: int,
        price: int | None = None,
        tif: str = GTC,
        reduce_only: bool = False,
        position: Mapping[Hashable, int] | None = None,
    ) -> MatchResult:
        """Match an incoming order; `price=None` is a market order (never rests).

        `reduce_only` marks the order, should it rest, as one that may only shrink its
        owner's position. `position[owner]` is an owner's position in lots (positive
        long, negative short) as it stood before this order: a reduce-only maker then
        fills at most what still shrinks it, counting what its owner's orders filled
        earlier in this match, and whatever it cannot fill leaves the book
        (`reduce_only_canceled`). Without `position`, reduce-only makers fill as any."""
        if side == BUY:
            is_buy = True
        elif side == SELL:
            is_buy = False
        else:
            raise BookError(f"unknown side {side!r}")
        if qty <= 0:
            raise BookError("qty must be positive")
        if tif not in _TIFS:
            raise BookError(f"unknown time in force {tif!r}")
        book_orders = self.orders
        if order_id in book_orders:
            raise BookError(f"duplicate order id {order_id!r}")
        if is_buy:
            opposite, ranks = self.asks, self._ask_ranks
        else:
            opposite, ranks = self.bids, self._bid_ranks

        if tif != GTC:
            if tif == POST_ONLY:
                if price is None:
                    raise BookError("POST_ONLY needs a price")
                if ranks:
                    best = -ranks[-1] if is_buy else ranks[-1]
                    if best <= price if is_buy else best >= price:
                        return MatchResult(
                            status=REJECTED, remaining=qty, reject_reason="WOULD_CROSS"
                        )
            elif tif == FOK:
                fillable, _ = self.sweep(side, qty, price, owner, position)
                if fillable < qty:
                    return MatchResult(
                        status=REJECTED, remaining=qty, reject_reason="FOK_UNFILLABLE"
                    )

        fills: list[Fill] = []
        stp_canceled: list[tuple[Hashable, int]] = []
        ro_canceled: list[tuple[Hashable, int]] | tuple[()] = ()
        bid_deltas: dict[int, int] = {}
        ask_deltas: dict[int, int] = {}
        maker_deltas = ask_deltas if is_buy else bid_deltas
        remaining = qty
        while remaining and ranks:
            key = -ranks[-1]
            level_price = key if is_buy else -key
            if price is not None and (level_price > price if is_buy else level_price < price):
                break
            lvl = opposite[key]
            orders = lvl.orders
            while remaining and orders:
                maker = next(iter(orders.values()))
                if maker.owner == owner:
                    # Self-trade prevention, "cancel maker": the resting order goes.
                    del orders[maker.order_id]
                    del book_orders[maker.order_id]
                    lvl.total -= maker.qty
                    stp_canceled.append((maker.order_id, maker.qty))
                    continue
                maker_qty = maker.qty
                if position is not None and maker.reduce_only:
                    room = _reducible(maker, position) - sum(
                        f.qty for f in fills if f.maker_owner == maker.owner
                    )
                    if room < maker_qty:
                        # It fills what still shrinks the position; the rest leaves.
                        take = min(max(room, 0), remaining)
                        del orders[maker.order_id]
                        del book_orders[maker.order_id]
                        lvl.total -= maker_qty
                        maker.qty = 0
                        if take:
                            remaining -= take
                            fills.append(Fill(maker.order_id, maker.owner, level_price, take, 0))
                        if not ro_canceled:
                            ro_canceled = []
                        ro_canceled.append((maker.order_id, maker_qty - take))
                        continue
                if maker_qty <= remaining:
                    take = maker_qty
                    maker.qty = 0
                    del orders[maker.order_id]
                    del book_orders[maker.order_id]
                else:
                    take = remaining
                    maker.qty = maker_qty - take
                lvl.total -= take
                remaining -= take
                fills.append(Fill(maker.order_id, maker.owner, level_price, take, maker.qty))
            maker_deltas[level_price] = lvl.total
            if not orders:
                del opposite[key]
                ranks.pop()

        filled = qty - remaining
        if remaining and price is not None and tif in (GTC, POST_ONLY):
            o = RestingOrder(order_id, owner, side, price, remaining, reduce_only)
            if is_buy:
                own, own_ranks, key, own_deltas = self.bids, self._bid_ranks, -price, bid_deltas
            else:
                own, own_ranks, key, own_deltas = self.asks, self._ask_ranks, price, ask_deltas
            lvl = own.get(key)
            if lvl is None:
                lvl = own[key] = Level()
                # A new best level (the common case) goes at the end without a search.
                if not own_ranks or -key > own_ranks[-1]:
                    own_ranks.append(-key)
                else:
                    insort(own_ranks, -key)
            lvl.orders[order_id] = o
            lvl.total += remaining
            book_orders[order_id] = o
            own_deltas[price] = lvl.total
            if reduce_only:
                self._reduce_only.setdefault(owner, []).append(o)
            return MatchResult(
                PARTIALLY_FILLED if filled else NEW,
                filled,
                remaining,
                True,
                None,
                fills,
                stp_canceled,
                bid_deltas,
                ask_deltas,
                ro_canceled,
            )
        return MatchResult(
            CANCELED if remaining else FILLED,
            filled,
            remaining,
            False,
            None,
            fills,
            stp_canceled,
            bid_deltas,
            ask_deltas,
            ro_canceled,
        )

    def cancel(self, order_id: Hashable) -> tuple[RestingOrder, int] | None:
        """Remove a resting order; returns it and the new total of its level, or None
        when it is not on the book."""
        o = self.orders.pop(order_id, None)
        if o is None:
            return None
        if o.side == BUY:
            book, ranks, key = self.bids, self._bid_ranks, -o.price
        else:
            book, ranks, key = self.asks, self._ask_ranks, o.price
        lvl = book[key]
        del lvl.orders[order_id]
        lvl.total -= o.qty
        if not lvl.orders:
            del book[key]
            del ranks[bisect_left(ranks, -key)]
        return o, lvl.total

    def rekey(self, old_id: Hashable, new_id: Hashable) -> None:
        """Rename a resting order (placed under a provisional id before storage gave it
        its own). It is the newest order at its level, so re-appending it there keeps
        its time priority."""
        o = self.orders.get(old_id)
        if o is None:
            raise BookError(f"unknown order id {old_id!r}")
        if new_id in self.orders:
            raise BookError(f"duplicate order id {new_id!r}")
        book, key = (self.bids, -o.price) if o.side == BUY else (self.asks, o.price)
        orders = book[key].orders
        if next(reversed(orders)) != old_id:
            raise BookError("only the newest order of a level can be renamed")
        del self.orders[old_id]
        del orders[old_id]
        o.order_id = new_id
        orders[new_id] = o
        self.orders[new_id] = o

    def _rest(self, o: RestingOrder) -> None:
        if o.side == BUY:
            book, ranks, key = self.bids, self._bid_ranks, -o.price
        else:
            book, ranks, key = self.asks, self._ask_ranks, o.price
        lvl = book.get(key)
        if lvl is None:
            lvl = book[key] = Level()
            insort(ranks, -key)
        lvl.orders[o.order_id] = o
        lvl.total += o.qty
        self.orders[o.order_id] = o
        if o.reduce_only:
            self._reduce_only.setdefault(o.owner, []).append(o)


def _reducible(o: RestingOrder, position: Mapping[Hashable, int]) -> int:
    """How much reduce-only `o` may fill, by its owner's position before this match (an
    owner missing from `position` has none)."""
    size = position.get(o.owner, 0)
    return size if o.side == SELL else -size
