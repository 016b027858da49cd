"""The trader events of what the risk engine changes outside the order path
(auto-deleverage, liquidation, expiry): the same signals, payloads and order as an
order's own (trades, then `order_updated`, `fill_created`, then one `position_updated`
per market and one `balances_changed`), so that the realtime app turns them into the
same `trade`, `orderUpdate`, `fill`, `positionUpdate` and `balanceUpdate` messages.

Payloads are built inside the transaction, from the rows it wrote; balances are read
when the events are queued, at the end of the transaction, as it leaves them. Nothing is
sent unless it commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from accounts.models import Balance
from accounts.selectors import public_trader_ids
from accounts.signals import balances_changed
from trading import signals
from trading.models import Fill, Market, Order, Position, Trade
from trading.presenters import fill_dict, order_dict, trade_dict


@dataclass
class TraderEvents:
    """What one transaction of the risk engine changed, per trader, in one mode."""

    mode: str
    trades: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    orders: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    fills: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # market symbol -> {(trader pk, position pk)}
    positions: dict[str, set[tuple[int, int]]] = field(default_factory=dict)
    # (trader pk, asset) of the balances that moved
    balances: set[tuple[int, str]] = field(default_factory=set)

    def traded(
        self, symbol: str, trades: Iterable[Trade], orders: Iterable[Order], fills: Iterable[Fill]
    ) -> None:
        self.trades += [(symbol, trade_dict(t)) for t in trades]
        self.orders += [(o.trader_id, order_dict(o, symbol)) for o in orders]
        self.fills += [(f.trader_id, fill_dict(f, symbol)) for f in fills]

    def moved(self, symbol: str, positions: Iterable[Position]) -> None:
        self.positions.setdefault(symbol, set()).update((p.trader_id, p.pk) for p in positions)

    def paid(self, trader_ids: Iterable[int], asset: str) -> None:
        self.balances.update((t, asset) for t in trader_ids)

    def send_on_commit(self) -> None:
        """Queue the events to be sent once the transaction commits. Call it last, when
        the balances are as the transaction leaves them."""
        if not (self.trades or self.orders or self.fills or self.positions or self.balances):
            return
        mode = self.mode
        # Private events go to trading accounts only: system accounts have no channel.
        uuids = public_trader_ids(
            {t for t, _ in self.orders} | {t for t, _ in self.fills} | {t for t, _ in self.balances}
        )
        trades = list(self.trades)
        orders = [(uuids[t], p) for t, p in self.orders if t in uuids]
        fills = [(uuids[t], p) for t, p in self.fills if t in uuids]
        positions = {s: sorted(ids) for s, ids in self.positions.items() if ids}
        balances = _balances_read(self.balances, mode, uuids)

        def send() -> None:
            with signals.events_of_one_commit():
                for symbol, trade in trades:
                    signals.trade_executed.send(
                        sender=Market, market=symbol, mode=mode, trade=trade
                    )
                for trader_id, order in orders:
                    signals.order_updated.send(sender=Order, trader_id=trader_id, order=order)
                for trader_id, fill in fills:
                    signals.fill_created.send(sender=Fill, trader_id=trader_id, fill=fill)
                for symbol, ids in positions.items():
                    signals.position_updated.send(
                        sender=Position, market=symbol, mode=mode, position_ids=ids
                    )
                if balances:
                    balances_changed.send(sender=Balance, balances=balances)

        # Delivery is best effort and the change is committed: a receiver's failure is
        # logged, never raised into the risk engine.
        transaction.on_commit(send, robust=True)


def _balances_read(keys: set[tuple[int, str]], mode: str, uuids: dict) -> list[Balance]:
    wanted = {(t, a) for t, a in keys if t in uuids}
    if not wanted:
        return []
    rows = Balance.objects.filter(
        trader_id__in={t for t, _ in wanted}, asset__in={a for _, a in wanted}, mode=mode
    ).order_by("pk")
    return [b for b in rows if (b.trader_id, b.asset) in wanted]
