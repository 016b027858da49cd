"""The one emitter of trading: what a transaction changed, turned into domain events
(`trading.signals`, `balances_changed`) that are sent once it commits.

Every writer of trading and accounts gathers its changes in an `Emitter` as it makes
them (an order's match, a cancel, a liquidation, auto-deleverage, expiry, funding, a
market's status, a leverage change; the faucet, the vault, a paper reset) and calls
`send_on_commit` last. Then:

- payloads are built inside the transaction, from the rows it wrote (an order's payload
  as that order left it, even if a later order of the same transaction fills it again);
  balances and positions are sent once, as the transaction leaves them;
- private events go to trading accounts only (system accounts have no channel);
- the events of one commit leave together, in a fixed order: per step (an order, a
  cancel, a fill of the risk engine) its book delta, trades, orders and fills; then the
  rest (funding, a market's status, a liquidation's summary), the positions and the
  balances; a book's deltas after those of the commit
  before it (`signals.in_commit_order`);
- nothing is sent unless the transaction commits, and a receiver's failure is logged,
  never raised into the code that committed (`robust=True`): the change is already
  durable and delivery is best effort.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from ledger.models import Balance
from ledger.selectors import public_trader_ids
from ledger.signals import balances_changed
from trading import signals
from trading.models import Fill, Market, Order, Position, Trade
from trading.presenters import dec, fill_dict, order_dict, trade_dict


@dataclass(slots=True)
class _Step:
    """The public and private events of one order, one cancel or one fill of the risk
    engine, in the order they are sent."""

    symbol: str
    seq: int | None
    book: dict[str, list] | None
    trades: list[dict[str, Any]]
    orders: list[tuple[int, dict[str, Any]]]
    fills: list[tuple[int, dict[str, Any]]]


@dataclass
class Emitter:
    """What one transaction changed in one mode, as the events to send on its commit."""

    mode: str
    steps: list[_Step] = field(default_factory=list)
    # market symbol -> {(trader pk, position pk)}, and, where the writer could tell, each
    # moved position as shown (per trader), so that no receiver reads it again.
    positions: dict[str, set[tuple[int, int]]] = field(default_factory=dict)
    shown: dict[str, dict[int, dict] | None] = field(default_factory=dict)
    # Balance rows as the transaction leaves them (the writer holds them), and the keys
    # (trader pk, asset) of those to read when the events are queued.
    balance_rows: dict[tuple[int, str, str], Balance] = field(default_factory=dict)
    balance_keys: set[tuple[int, str]] = field(default_factory=set)
    # Events of no step (funding, a market's status, a liquidation's summary), sent
    # after the steps in the order they were added; and the traders they are private to.
    others: list[Callable[[dict], None]] = field(default_factory=list)
    private_to: set[int] = field(default_factory=set)
    # Users the writer has in hand: their public ids need no query.
    known: dict[int, Any] = field(default_factory=dict)

    def changed(
        self,
        market: Market,
        *,
        seq: int | None = None,
        deltas: tuple[dict[int, int], dict[int, int]] | None = None,
        trades: Iterable[Trade] = (),
        orders: Iterable[tuple[Order, dict[str, Any] | None]] = (),
        fills: Iterable[Fill] = (),
    ) -> None:
        """One step: the book's `deltas` (ticks -> lots, 0 removes a level) that brought
        it to `seq`, its trades, the orders it changed (with their payload as the step
        left them, or None to build it now) and their fills."""
        symbol = market.symbol
        book = None
        if deltas is not None and (deltas[0] or deltas[1]):
            tick, lot = market.tick_size, market.lot_size
            bids, asks = deltas
            book = {
                "bids": [
                    [dec(p * tick), dec(q * lot)] for p, q in sorted(bids.items(), reverse=True)
                ],
                "asks": [[dec(p * tick), dec(q * lot)] for p, q in sorted(asks.items())],
            }
        step = _Step(
            symbol=symbol,
            seq=seq if book is not None else None,
            book=book,
            trades=[trade_dict(t) for t in trades],
            orders=[
                (o.trader_id, p if p is not None else order_dict(o, symbol)) for o, p in orders
            ],
            fills=[(f.trader_id, fill_dict(f, symbol)) for f in fills],
        )
        self.steps.append(step)

    def moved(
        self, symbol: str, positions: Iterable[Position], shown: dict[int, dict] | None = None
    ) -> None:
        """Positions of one market that moved; `shown`: each as `positions_list` shows
        it, per trader, if the writer has all of it."""
        self.positions.setdefault(symbol, set()).update((p.trader_id, p.pk) for p in positions)
        self.shown[symbol] = shown

    def paid(self, balances: Iterable[Balance]) -> None:
        """Balance rows that moved, held by the writer: sent as it leaves them."""
        self.balance_rows.update(((b.trader_id, b.asset, b.mode), b) for b in balances)

    def paid_keys(self, trader_ids: Iterable[int], asset: str) -> None:
        """Balances that moved, read when the events are queued."""
        self.balance_keys.update((t, asset) for t in trader_ids)

    def funding(self, book_symbol: str, *, rate: str, next_funding_ts: int | None) -> None:
        mode = self.mode
        self.others.append(
            lambda _: signals.funding_rate_updated.send(
                sender=Market,
                market=book_symbol,
                mode=mode,
                rate=rate,
                next_funding_ts=next_funding_ts,
            )
        )

    def funding_paid(self, trader_id: int, payment: dict[str, Any]) -> None:
        self._private(signals.funding_paid, trader_id, payment=payment)

    def liquidated(self, trader_id: int, liquidation: dict[str, Any]) -> None:
        self._private(signals.liquidated, trader_id, liquidation=liquidation)

    def _private(self, signal: Any, trader_id: int, **payload: Any) -> None:
        """An event for one trader's channel (none for a system account)."""
        self.private_to.add(trader_id)

        def send(uuids: dict) -> None:
            if trader_id in uuids:
                signal.send(sender=Market, trader_id=uuids[trader_id], **payload)

        self.others.append(send)

    def market_status(self, symbol: str, status: str) -> None:
        self.others.append(
            lambda _: signals.market_state_changed.send(sender=Market, market=symbol, status=status)
        )

    def send_on_commit(self) -> None:
        """Queue everything gathered to be sent once the transaction commits. Call it
        last, when the balances are as the transaction leaves them."""
        if not (
            self.steps or self.positions or self.balance_rows or self.balance_keys or self.others
        ):
            return
        mode = self.mode
        traders = {t for s in self.steps for t, _ in s.orders}
        traders |= {t for s in self.steps for t, _ in s.fills}
        traders |= {t for t, _, _ in self.balance_rows} | {t for t, _ in self.balance_keys}
        traders |= self.private_to
        uuids = public_trader_ids(traders, known=self.known.values()) if traders else {}
        steps = [
            _Step(
                s.symbol,
                s.seq,
                s.book,
                s.trades,
                [(uuids[t], p) for t, p in s.orders if t in uuids],
                [(uuids[t], p) for t, p in s.fills if t in uuids],
            )
            for s in self.steps
        ]
        positions = [
            (symbol, sorted(ids), self.shown.get(symbol))
            for symbol, ids in self.positions.items()
            if ids
        ]
        balances = [b for k, b in sorted(self.balance_rows.items()) if k[0] in uuids]
        balances += _balances_read(
            self.balance_keys - {k[:2] for k in self.balance_rows}, mode, uuids
        )
        others = list(self.others)
        seqs: dict[str, list[int]] = {}
        for s in steps:
            if s.seq is not None:
                seqs.setdefault(s.symbol, []).append(s.seq)

        def send() -> None:
            with ExitStack() as stack:
                for symbol, ordered in sorted(seqs.items()):
                    stack.enter_context(
                        signals.in_commit_order((symbol, mode), ordered[0], ordered[-1])
                    )
                stack.enter_context(signals.events_of_one_commit())
                for s in steps:
                    if s.book is not None:
                        signals.book_changed.send(
                            sender=Market, market=s.symbol, mode=mode, seq=s.seq, **s.book
                        )
                    for t in s.trades:
                        signals.trade_executed.send(
                            sender=Market, market=s.symbol, mode=mode, trade=t
                        )
                    for trader_id, payload in s.orders:
                        signals.order_updated.send(sender=Order, trader_id=trader_id, order=payload)
                    for trader_id, payload in s.fills:
                        signals.fill_created.send(sender=Fill, trader_id=trader_id, fill=payload)
                for other in others:
                    other(uuids)
                for symbol, ids, shown in positions:
                    signals.position_updated.send(
                        sender=Position, market=symbol, mode=mode, position_ids=ids, shown=shown
                    )
                if balances:
                    balances_changed.send(sender=Balance, balances=balances)

        transaction.on_commit(send, robust=True)


def _balances_read(keys: set[tuple[int, str]], mode: str, uuids: dict) -> list[Balance]:
    wanted = {(t, a) for t, a in keys if t in uuids}
    if not wanted:
        return []
    rows = Balance.objects.filter(
        trader_id__in={t for t, _ in wanted}, asset__in={a for _, a in wanted}, mode=mode
    ).order_by("pk")
    return [b for b in rows if (b.trader_id, b.asset) in wanted]
