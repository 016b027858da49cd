"""The state of one transaction of orders on one locked book (`Batch`): the rows it
holds and what its orders changed, in memory, until `persist.batch_write` writes it
once; and the reads of an account as the batch now has it."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from dexsite import sql
from ledger.models import Balance
from ledger.services import Posting
from trading import engine as eng
from trading import margin
from trading.emit import Emitter
from trading.models import (
    Book,
    Fill,
    IndexPrice,
    MarketKind,
    Order,
    Position,
    Trade,
)
from trading.selectors import position_shown
from trading.services.books import (
    engine_book_return,
    engine_book_take,
)


@dataclass
class Batch:
    """The orders of one transaction on one locked book: what they changed in memory,
    written once by `batch_write`. Balance rows, once locked, stay in `held` and carry
    every order's changes, so that each order's checks see the orders before it."""

    book: Book
    held: dict[tuple[int, str, str], Balance] = field(default_factory=dict)
    # Orders this transaction wrote or read, as they now are.
    orders: dict[int, Order] = field(default_factory=dict)
    changed_orders: dict[int, Order] = field(default_factory=dict)
    changed_balances: set[tuple[int, str, str]] = field(default_factory=set)
    ledger: list[Posting] = field(default_factory=list)
    fee_postings: list[Posting] = field(default_factory=list)
    book_fields: set[str] = field(default_factory=set)
    trades: list[Trade] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    # Positions in this book's market by trader, as they now are (they change only
    # under the book's lock), and those to write.
    positions: dict[int, Position] = field(default_factory=dict)
    changed_positions: dict[int, Position] = field(default_factory=dict)
    # Takers' exposures as read when the batch began. Their positions in other markets
    # cannot move meanwhile: that takes their balance row, which the batch holds.
    exposures: dict[int, list[margin.Exposure]] = field(default_factory=dict)
    taken: eng.OrderBook | None = None
    mutated: bool = False
    # An order is between its match and its last write: nothing may refuse it now.
    placing: bool = False
    # Positions in this book's market, in lots, of the owners of reduce-only orders
    # resting on it whom the batch does not hold (`persist.reducers_read`): what the
    # engine is told they may still reduce.
    reducers: dict[int, int] = field(default_factory=dict)
    events: Emitter = field(init=False)
    # The new orders' keys, reserved when the batch opened (None where there are no
    # sequences to reserve from); their rows are written together.
    keys: list[int] | None = None
    new_orders: list[Order] = field(default_factory=list)
    # Keys for the trades and fills, reserved with the makers' reads (`makers_read`),
    # ascending; `batch_write` reserves what they lack.
    trade_keys: list[int] = field(default_factory=list)
    fill_keys: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = Emitter(self.book.mode)

    def order_add(self, order: Order) -> None:
        """Give a new order its key, from those reserved for the batch's orders
        (ascending, so that ids keep arrival order); its row is written with the
        others by `batch_write`. Where there are no sequences to reserve from (SQLite),
        each is written as it comes."""
        if self.keys:
            order.pk = self.keys.pop(0)
            self.new_orders.append(order)
        else:
            sql.insert([order])

    @property
    def engine(self) -> eng.OrderBook:
        if self.taken is None:
            self.taken = engine_book_take(self.book)
        return self.taken

    def give_back(self) -> None:
        """Return an engine book that no order changed (the transaction is about to roll
        back): it still matches the database."""
        if self.taken is not None and not self.mutated:
            engine_book_return(self.book, self.taken, self.book.seq)


def exposures_read(batch: Batch, traders: set[int], exposures: list[margin.Exposure]) -> None:
    """Keep the exposures read of `traders` (all of each one's positions in the mode)."""
    for t in traders:
        batch.exposures.setdefault(t, [])
    for e in exposures:
        _exposures_keep(batch, e.position.trader_id, e)


def _exposures_keep(batch: Batch, trader_id: int, e: margin.Exposure) -> None:
    batch.exposures.setdefault(trader_id, []).append(e)
    if e.position.market_id == batch.book.market_id:
        # The batch's copy wins over one read later.
        batch.positions.setdefault(trader_id, e.position)


def exposures_now(batch: Batch, trader_id: int) -> list[margin.Exposure]:
    """The account's exposures, its position in this book's market as the batch has it
    (the caller holds the account's balance row)."""
    read = batch.exposures.get(trader_id)
    if read is None:
        found = margin.exposures_for(trader_id, batch.book.mode, include_flat=True)
        exposures_read(batch, {trader_id}, found)
        read = batch.exposures[trader_id]
    market_id = batch.book.market_id
    out = [e for e in read if e.position.market_id != market_id]
    here = batch.positions.get(trader_id)
    if here is not None:
        if not hasattr(here, "book_mark"):
            # Created or read by the batch itself: the mark and index a read would join.
            market = batch.book.market
            here.market = market
            here.book_mark = batch.book.mark_price
            here.index_now = index_now(batch)
        out.append(margin.exposure_of(here))
    return out


def band_reference(batch: Batch) -> Decimal | None:
    """The price the market's bands are measured from: the book's mark, or the index of
    the underlying where the market has no mark (spot); None where there is neither."""
    book, market = batch.book, batch.book.market
    if market.is_derivative:
        mark = book.mark_price or market.mark_price
        if mark or market.kind == MarketKind.OPTION:
            # An option is worth no fraction of its underlying's index to measure from.
            return mark or None
    return index_now(batch)


def index_now(batch: Batch) -> Decimal | None:
    """The index of the batch's underlying: the market row's copy, read with the book
    (`index_set` writes it in the same transaction as the index itself); read from the
    index only for a market listed since the index last moved, which has no copy yet."""
    market = batch.book.market
    if market.index_price is None and not getattr(market, "index_read", False):
        found = IndexPrice.objects.filter(underlying=market.underlying)
        market.index_price = found.values_list("price", flat=True).first()
        market.index_read = True  # none to read: not again for this batch
    return market.index_price


def positions_shown(batch: Batch) -> dict[int, dict] | None:
    """Each moved position of the batch's market as `positions_list` shows it, from what
    the batch holds (its account's positions, marks and cash, as it leaves them): what
    the position events carry, so that nobody reads them again after the commit. None
    if the batch lacks any of it."""
    traders = {p.trader_id for p in batch.changed_positions.values()}
    if not traders:
        return None
    mode, symbol = batch.book.mode, batch.book.market.symbol
    shown = {}
    for t in traders:
        cash = batch.held.get((t, "USDC", mode))
        if t not in batch.exposures or cash is None:
            return None
        found = position_shown(exposures_now(batch, t), cash, symbol)
        if found is not None:
            shown[t] = found
    return shown
