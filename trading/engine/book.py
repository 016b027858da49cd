"""Price-time priority limit order book over integer ticks and lots.

Each side maps price -> Level; a Level keeps its resting orders in arrival order in an
OrderedDict (O(1) append, pop-front and removal by id) and the level's total quantity,
so depth reads never walk orders. Bids are keyed by negated price so that both sides
iterate best-first from index 0 of their SortedDict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from sortedcontainers import SortedDict

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
    __slots__ = ("order_id", "owner", "price", "qty", "side")

    def __init__(self, order_id: Hashable, owner: Hashable, side: str, price: int, qty: int):
        self.order_id = order_id
        self.owner = owner
        self.side = side
        self.price = price
        self.qty = qty


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

    @property
    def changed(self) -> bool:
        return bool(self.bid_deltas or self.ask_deltas)


class OrderBook:
    """One book. Not thread-safe: the caller serialises access (the service does it
    with a row lock on the book)."""

    __slots__ = ("asks", "bids", "orders")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()  # -price -> Level
        self.asks: SortedDict = SortedDict()  # price -> Level
        self.orders: dict[Hashable, RestingOrder] = {}

    # -- reads -------------------------------------------------------------------

    def best_bid(self) -> int | None:
        return -self.bids.peekitem(0)[0] if self.bids else None

    def best_ask(self) -> int | None:
        return self.asks.peekitem(0)[0] if self.asks else None

    def depth(
        self, levels: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Best-first (price, total qty) per side, at most `levels` each."""
        bids = [(-k, lvl.total) for k, lvl in self._head(self.bids, levels)]
        asks = [(k, lvl.total) for k, lvl in self._head(self.asks, levels)]
        return bids, asks

    @staticmethod
    def _head(side: SortedDict, levels: int | None):
        if levels is None or levels >= len(side):
            return side.items()
        if levels <= 0:
            return []
        return side.items()[:levels]

    def level_qty(self, side: str, price: int) -> int:
        book, key = (self.bids, -price) if side == BUY else (self.asks, price)
        lvl = book.get(key)
        return lvl.total if lvl else 0

    def sweep(self, side: str, qty: int, price: int | None, owner: Hashable) -> tuple[int, int]:
        """What an order of `side` for `qty` at limit `price` (None: market) could take
        right now: (fillable qty, sum of price*qty). Orders of `owner` are skipped, as
        self-trade prevention would cancel them rather than trade."""
        opposite = self.asks if side == BUY else self.bids
        got = 0
        cost = 0
        for key, lvl in opposite.items():
            level_price = key if side == BUY else -key
            if price is not None and (level_price > price if side == BUY else level_price < price):
                break
            for o in lvl.orders.values():
                if o.owner == owner:
                    continue
                take = min(qty - got, o.qty)
                got += take
                cost += take * level_price
                if got == qty:
                    return got, cost
        return got, cost

    # -- writes ------------------------------------------------------------------

    def add_resting(
        self, order_id: Hashable, owner: Hashable, side: str, price: int, qty: int
    ) -> None:
        """Put an order on the book without matching (rebuilding a book from storage)."""
        if side != BUY and side != SELL:
            raise BookError(f"unknown side {side!r}")
        if qty <= 0:
            raise BookError("qty must be positive")
        if order_id in self.orders:
            raise BookError(f"duplicate order id {order_id!r}")
        self._rest(RestingOrder(order_id, owner, side, price, qty))

    def place(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        qty: int,
        price: int | None = None,
        tif: str = GTC,
    ) -> MatchResult:
        """Match an incoming order; `price=None` is a market order (never rests)."""
        if side != BUY and side != SELL:
            raise BookError(f"unknown side {side!r}")
        if qty <= 0:
            raise BookError("qty must be positive")
        if tif not in _TIFS:
            raise BookError(f"unknown time in force {tif!r}")
        if order_id in self.orders:
            raise BookError(f"duplicate order id {order_id!r}")
        is_buy = side == BUY
        opposite = self.asks if is_buy else self.bids

        if tif == POST_ONLY:
            if price is None:
                raise BookError("POST_ONLY needs a price")
            best = self.best_ask() if is_buy else self.best_bid()
            if best is not None and (best <= price if is_buy else best >= price):
                return MatchResult(status=REJECTED, remaining=qty, reject_reason="WOULD_CROSS")
        elif tif == FOK:
            fillable, _ = self.sweep(side, qty, price, owner)
            if fillable < qty:
                return MatchResult(status=REJECTED, remaining=qty, reject_reason="FOK_UNFILLABLE")

        result = MatchResult(status=NEW, remaining=qty)
        maker_deltas = result.ask_deltas if is_buy else result.bid_deltas
        remaining = qty
        while remaining and opposite:
            key, lvl = opposite.peekitem(0)
            level_price = key if is_buy else -key
            if price is not None and (level_price > price if is_buy else level_price < price):
                break
            orders = lvl.orders
            while remaining and orders:
                maker = next(iter(orders.values()))
                if maker.owner == owner:
                    # Self-trade prevention, "cancel maker": the resting order goes.
                    del orders[maker.order_id]
                    del self.orders[maker.order_id]
                    lvl.total -= maker.qty
                    result.stp_canceled.append((maker.order_id, maker.qty))
                    continue
                take = maker.qty if maker.qty < remaining else remaining
                maker.qty -= take
                lvl.total -= take
                remaining -= take
                result.fills.append(Fill(maker.order_id, maker.owner, level_price, take, maker.qty))
                if not maker.qty:
                    del orders[maker.order_id]
                    del self.orders[maker.order_id]
            maker_deltas[level_price] = lvl.total
            if not orders:
                del opposite[key]

        result.filled = qty - remaining
        result.remaining = remaining
        if remaining and price is not None and tif in (GTC, POST_ONLY):
            self._rest(RestingOrder(order_id, owner, side, price, remaining))
            (result.bid_deltas if is_buy else result.ask_deltas)[price] = self.level_qty(
                side, price
            )
            result.rested = True
            result.status = PARTIALLY_FILLED if result.filled else NEW
        elif remaining:
            result.status = CANCELED
        else:
            result.status = FILLED
        return result

    def cancel(self, order_id: Hashable) -> tuple[RestingOrder, int] | None:
        """Remove a resting order; returns it and the new total of its level, or None
        when it is not on the book."""
        o = self.orders.pop(order_id, None)
        if o is None:
            return None
        book, key = (self.bids, -o.price) if o.side == BUY else (self.asks, o.price)
        lvl = book[key]
        del lvl.orders[order_id]
        lvl.total -= o.qty
        if not lvl.orders:
            del book[key]
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
        book, key = (self.bids, -o.price) if o.side == BUY else (self.asks, o.price)
        lvl = book.get(key)
        if lvl is None:
            lvl = book[key] = Level()
        lvl.orders[o.order_id] = o
        lvl.total += o.qty
        self.orders[o.order_id] = o
