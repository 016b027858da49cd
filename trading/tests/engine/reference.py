"""A deliberately naive order book used as the oracle for differential tests.

Everything lives in one plain list of resting orders kept in arrival order, and every
question (best maker, level total, depth) is answered by scanning that list. It is slow
on purpose: the point is that each rule can be checked by reading a few lines, so a
disagreement with `trading.engine.book.OrderBook` points at the engine, not at this file.

Only the string constants and the exception type are shared with the engine, so that
results compare equal; no matching logic is imported.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from trading.engine.book import (
    BUY,
    CANCELED,
    FILLED,
    FOK,
    GTC,
    IOC,
    NEW,
    PARTIALLY_FILLED,
    POST_ONLY,
    REJECTED,
    SELL,
    BookError,
)

TIFS = (GTC, IOC, FOK, POST_ONLY)


# eq=False: orders are removed by identity, never by comparing field values.
@dataclass(eq=False)
class RefOrder:
    order_id: Hashable
    owner: Hashable
    side: str
    price: int
    qty: int


@dataclass
class RefFill:
    maker_id: Hashable
    maker_owner: Hashable
    price: int
    qty: int
    maker_remaining: int


@dataclass
class RefResult:
    status: str
    filled: int = 0
    remaining: int = 0
    rested: bool = False
    reject_reason: str | None = None
    fills: list[RefFill] = field(default_factory=list)
    stp_canceled: list[tuple[Hashable, int]] = field(default_factory=list)
    bid_deltas: dict[int, int] = field(default_factory=dict)
    ask_deltas: dict[int, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.bid_deltas or self.ask_deltas)


def _opposite(side: str) -> str:
    return SELL if side == BUY else BUY


def _reaches(taker_side: str, limit: int | None, maker_price: int) -> bool:
    """Whether a taker of `taker_side` with `limit` (None: market) may trade at
    `maker_price`."""
    if limit is None:
        return True
    if taker_side == BUY:
        return maker_price <= limit
    return maker_price >= limit


def _better(maker_side: str, a: int, b: int) -> bool:
    """Whether resting price `a` is strictly better for a taker than `b`."""
    if maker_side == BUY:
        return a > b
    return a < b


class ReferenceBook:
    def __init__(self) -> None:
        # Arrival order: an earlier index always means earlier time priority.
        self.resting: list[RefOrder] = []

    # -- reads -------------------------------------------------------------------

    def find(self, order_id: Hashable) -> RefOrder | None:
        for o in self.resting:
            if o.order_id == order_id:
                return o
        return None

    def level_qty(self, side: str, price: int) -> int:
        total = 0
        for o in self.resting:
            if o.side == side and o.price == price:
                total += o.qty
        return total

    def best_bid(self) -> int | None:
        prices = [o.price for o in self.resting if o.side == BUY]
        return max(prices) if prices else None

    def best_ask(self) -> int | None:
        prices = [o.price for o in self.resting if o.side == SELL]
        return min(prices) if prices else None

    def depth(
        self, levels: int | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        bid_prices = sorted({o.price for o in self.resting if o.side == BUY}, reverse=True)
        ask_prices = sorted({o.price for o in self.resting if o.side == SELL})
        bids = [(p, self.level_qty(BUY, p)) for p in bid_prices]
        asks = [(p, self.level_qty(SELL, p)) for p in ask_prices]
        if levels is not None:
            bids = bids[:levels]
            asks = asks[:levels]
        return bids, asks

    def _best_maker(self, taker_side: str, limit: int | None) -> RefOrder | None:
        maker_side = _opposite(taker_side)
        best: RefOrder | None = None
        for o in self.resting:
            if o.side != maker_side or not _reaches(taker_side, limit, o.price):
                continue
            # Strictly better only: on a tie the earlier order (found first) keeps it.
            if best is None or _better(maker_side, o.price, best.price):
                best = o
        return best

    def sweep(self, side: str, qty: int, price: int | None, owner: Hashable) -> tuple[int, int]:
        maker_side = _opposite(side)
        candidates = [
            (o.price if maker_side == SELL else -o.price, index, o)
            for index, o in enumerate(self.resting)
            if o.side == maker_side and o.owner != owner and _reaches(side, price, o.price)
        ]
        candidates.sort(key=lambda c: (c[0], c[1]))
        got = 0
        cost = 0
        for _, _, o in candidates:
            take = min(qty - got, o.qty)
            got += take
            cost += take * o.price
            if got == qty:
                break
        return got, cost

    # -- writes ------------------------------------------------------------------

    def _remove(self, order: RefOrder) -> None:
        self.resting = [o for o in self.resting if o is not order]

    def add_resting(
        self, order_id: Hashable, owner: Hashable, side: str, price: int, qty: int
    ) -> None:
        if side not in (BUY, SELL):
            raise BookError(f"unknown side {side!r}")
        if qty <= 0:
            raise BookError("qty must be positive")
        if self.find(order_id) is not None:
            raise BookError(f"duplicate order id {order_id!r}")
        self.resting.append(RefOrder(order_id, owner, side, price, qty))

    def cancel(self, order_id: Hashable) -> tuple[RefOrder, int] | None:
        o = self.find(order_id)
        if o is None:
            return None
        self._remove(o)
        return o, self.level_qty(o.side, o.price)

    def rekey(self, old_id: Hashable, new_id: Hashable) -> None:
        o = self.find(old_id)
        if o is None:
            raise BookError(f"unknown order id {old_id!r}")
        if self.find(new_id) is not None:
            raise BookError(f"duplicate order id {new_id!r}")
        same_level = [x for x in self.resting if x.side == o.side and x.price == o.price]
        # Renaming keeps the list position, which only matches "re-append at the back"
        # when the order already is the last one at its level.
        if same_level[-1] is not o:
            raise BookError("only the newest order of a level can be renamed")
        o.order_id = new_id

    def place(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        qty: int,
        price: int | None = None,
        tif: str = GTC,
    ) -> RefResult:
        if side not in (BUY, SELL):
            raise BookError(f"unknown side {side!r}")
        if tif not in TIFS:
            raise BookError(f"unknown time in force {tif!r}")
        if qty <= 0:
            raise BookError("qty must be positive")
        if self.find(order_id) is not None:
            raise BookError(f"duplicate order id {order_id!r}")
        maker_side = _opposite(side)

        if tif == POST_ONLY:
            if price is None:
                raise BookError("POST_ONLY needs a price")
            best = self.best_ask() if side == BUY else self.best_bid()
            if best is not None and _reaches(side, price, best):
                return RefResult(status=REJECTED, remaining=qty, reject_reason="WOULD_CROSS")

        if tif == FOK:
            # Own orders would be cancelled by STP, never traded, so they cannot help.
            available = sum(
                o.qty
                for o in self.resting
                if o.side == maker_side and o.owner != owner and _reaches(side, price, o.price)
            )
            if available < qty:
                return RefResult(status=REJECTED, remaining=qty, reject_reason="FOK_UNFILLABLE")

        result = RefResult(status=NEW, remaining=qty)
        touched_maker_prices: set[int] = set()
        remaining = qty
        while remaining > 0:
            maker = self._best_maker(side, price)
            if maker is None:
                break
            touched_maker_prices.add(maker.price)
            if maker.owner == owner:
                self._remove(maker)
                result.stp_canceled.append((maker.order_id, maker.qty))
                continue
            take = min(remaining, maker.qty)
            maker.qty -= take
            remaining -= take
            result.fills.append(RefFill(maker.order_id, maker.owner, maker.price, take, maker.qty))
            if maker.qty == 0:
                self._remove(maker)

        result.filled = qty - remaining
        result.remaining = remaining
        touched_own_prices: set[int] = set()
        if remaining > 0 and price is not None and tif in (GTC, POST_ONLY):
            self.resting.append(RefOrder(order_id, owner, side, price, remaining))
            touched_own_prices.add(price)
            result.rested = True
            result.status = PARTIALLY_FILLED if result.filled else NEW
        elif remaining > 0:
            result.status = CANCELED
        else:
            result.status = FILLED

        maker_deltas = {p: self.level_qty(maker_side, p) for p in touched_maker_prices}
        own_deltas = {p: self.level_qty(side, p) for p in touched_own_prices}
        if side == BUY:
            result.bid_deltas, result.ask_deltas = own_deltas, maker_deltas
        else:
            result.bid_deltas, result.ask_deltas = maker_deltas, own_deltas
        return result
