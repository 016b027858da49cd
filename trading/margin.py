"""Cross margin of an account (trader, mode), in USDC.

  equity       = cash (USDC total) + value of positions at mark
  value        = perps/futures: unrealized PnL, size*mark - cost;
                 options: size*mark (the premium was paid in cash up front)
  initial      = perps/futures: |size|*mark/leverage; short options: see below; long: 0
  maintenance  = perps/futures: |size|*mark*mmr;      short options: (7.5% index + mark)*|size|
  free margin  = equity - initial - locked (what open orders reserve)

Short options post max(15% index - out-of-the-money amount, 10% index) + mark per unit.
One place computes this for the order path, the positions endpoint and liquidation.

The risk gate (`shortfall`) is here too: every action that moves cash or changes
exposure (orders of every kind, withdrawals, leverage changes) is judged by it on the
account as the action would leave it. See docs/risk.md, "The risk gate".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, Decimal

from django.contrib.auth import get_user_model

from dexsite import sql
from ledger.models import Balance
from trading import risk
from trading.models import Book, IndexPrice, Market, MarketKind, OptionType, Position
from trading.settle import fill_settled

# Cross margin is kept in this asset (every market quotes in it).
MARGIN_ASSET = "USDC"
SHORT_OPTION_RATE = Decimal("0.15")
SHORT_OPTION_FLOOR = Decimal("0.10")
SHORT_OPTION_MAINTENANCE = Decimal("0.075")


def short_option_margin(
    option_type: str, strike: Decimal, index: Decimal, mark: Decimal
) -> Decimal:
    """Initial margin per unit of a short option."""
    if option_type == OptionType.CALL:
        otm = max(Decimal(0), strike - index)
    else:
        otm = max(Decimal(0), index - strike)
    return max(SHORT_OPTION_RATE * index - otm, SHORT_OPTION_FLOOR * index) + mark


@dataclass(slots=True)
class Exposure:
    position: Position
    kind: str
    size: Decimal
    open_notional: Decimal
    mark: Decimal
    index: Decimal
    leverage: Decimal
    maintenance_ratio: Decimal
    strike: Decimal | None = None
    option_type: str | None = None

    @property
    def is_option(self) -> bool:
        return self.kind == MarketKind.OPTION

    def value(self, mark: Decimal | None = None) -> Decimal:
        px = self.mark if mark is None else mark
        if self.is_option:
            return self.size * px
        return self.size * px - self.open_notional

    def initial(self) -> Decimal:
        if self.is_option:
            if self.size >= 0:
                return Decimal(0)
            per_unit = short_option_margin(self.option_type, self.strike, self.index, self.mark)
            return per_unit * -self.size
        return abs(self.size) * self.mark / self.leverage

    def maintenance(self, mark: Decimal | None = None) -> Decimal:
        px = self.mark if mark is None else mark
        if self.is_option:
            if self.size >= 0:
                return Decimal(0)
            return (SHORT_OPTION_MAINTENANCE * self.index + px) * -self.size
        return abs(self.size) * px * self.maintenance_ratio


@dataclass(slots=True)
class Account:
    cash: Decimal
    locked: Decimal
    exposures: list[Exposure] = field(default_factory=list)

    @property
    def equity(self) -> Decimal:
        return self.cash + sum((e.value() for e in self.exposures), Decimal(0))

    @property
    def initial(self) -> Decimal:
        return sum((e.initial() for e in self.exposures), Decimal(0))

    @property
    def maintenance(self) -> Decimal:
        return sum((e.maintenance() for e in self.exposures), Decimal(0))

    @property
    def free(self) -> Decimal:
        return self.equity - self.initial - self.locked

    def below_maintenance(self) -> bool:
        return bool(self.exposures) and self.equity < self.maintenance

    def bankruptcy_price(self, exposure: Exposure) -> Decimal | None:
        """The mark of `exposure` at which the account's equity reaches zero, every
        other position held at its mark."""
        if exposure.size == 0:
            return None
        rest = self.equity - exposure.value()
        if exposure.is_option:
            price = -rest / exposure.size
        else:
            price = (exposure.open_notional - rest) / exposure.size
        return price if price > 0 else None

    def liquidation_price(self, exposure: Exposure) -> Decimal | None:
        """The mark of `exposure` at which equity meets maintenance, others at mark."""
        if exposure.size == 0 or exposure.is_option:
            return None
        rest_equity = self.equity - exposure.value()
        rest_maint = self.maintenance - exposure.maintenance()
        # rest_equity + size*P - cost = rest_maint + |size|*P*mmr
        denom = exposure.size - abs(exposure.size) * exposure.maintenance_ratio
        if denom == 0:
            return None
        price = (rest_maint - rest_equity + exposure.open_notional) / denom
        return price.quantize(risk.MONEY_QUANTUM) if price > 0 else None


# -- the risk gate ----------------------------------------------------------------------


def shortfall(
    before: Account,
    *,
    reserve: Decimal = Decimal(0),
    after: Account | None = None,
    reducing: bool = False,
) -> Decimal:
    """What the account lacks for an action (0: it may go ahead). The one risk gate.

    `reserve` is what the action locks from the account's cash while it waits (a
    resting order's margin, a pending withdrawal): it must fit in both the cash
    available and the free margin. `after` is the account once the action has done all
    it can (an order filled in full at its worst price, its fee paid): it must still
    carry its initial margin (free margin >= 0). Between the two, an order that fills in
    part lands on a free margin no lower than the lesser of the two ends (equity is
    linear in the filled share, initial margin convex), so the ends are enough.

    A risk-reducing action (`reducing`: reduce-only, or an option sell covered by a held
    long) is held to cash only for what it reserves (an option bought back pays its
    premium) and need not restore initial margin (the account that most
    needs to close has none to spare), but may not leave equity below zero at its fill
    price: an account that sells its position to an accomplice far below the mark would
    otherwise hand its losses to the insurance fund and the traders it is deleveraged
    against."""
    need = Decimal(0)
    if reserve > 0:
        # What a risk-reducing action reserves (an option bought back: its premium) is
        # held to cash alone.
        free = before.cash - before.locked
        need = reserve - (free if reducing else min(free, before.free))
    if after is not None:
        need = max(need, -after.equity if reducing else -after.free)
    return max(Decimal(0), need)


def available(account: Account) -> Decimal:
    """The most an action may reserve from the account and still pass the risk gate
    (`shortfall` with `reserve`, not `reducing`): cash no order or withdrawal holds, and
    no more than the free margin; never below zero. What `GET /account` shows as
    available to trade."""
    return max(Decimal(0), min(account.cash - account.locked, account.free))


def after_fill(
    account: Account, exposure: Exposure, signed_qty: Decimal, price: Decimal, fee: Decimal
) -> Account:
    """The account once `exposure` (one of its own, or `exposure_new`'s) has traded
    `signed_qty` (buy > 0) at `price` and paid `fee`, every mark where it was, settled
    as every fill is (`trading.settle`)."""
    settled = fill_settled(
        kind=exposure.kind,
        size=exposure.size,
        open_notional=exposure.open_notional,
        signed_qty=signed_qty,
        price=price,
    )
    moved = replace(exposure, size=settled.size, open_notional=settled.open_notional)
    others = [e for e in account.exposures if e is not exposure]
    return Account(account.cash + settled.cash - fee, account.locked, [*others, moved])


def exposure_new(position: Position, *, mark: Decimal, index: Decimal | None) -> Exposure:
    """The exposure of a position the account does not hold yet (`position` unsaved,
    flat, with its market)."""
    position.book_mark = mark
    position.index_now = index
    return exposure_of(position)


def exposures_for(trader_id: int, mode: str, *, include_flat: bool = False) -> list[Exposure]:
    """The account's positions with their book's mark and the underlying's index, in
    one query."""
    return _exposures('p."trader_id" = %s AND p."mode" = %s', [trader_id, mode], include_flat)


def exposures_of(trader_ids: Iterable[int], mode: str) -> list[Exposure]:
    """Several accounts' positions (flat ones included), in one query."""
    ids = sorted(set(trader_ids))
    if not ids:
        return []
    return exposures_of_query(ids, mode).run()


def exposures_of_query(trader_ids: Iterable[int], mode: str) -> sql.Query:
    """`exposures_of` (some accounts) as a `Query`, to be run with others
    (`sql.run_all`)."""
    ids = sorted(set(trader_ids))
    where = f'p."trader_id" IN ({sql.placeholders(len(ids))}) AND p."mode" = %s'
    return _exposures_query(where, [*ids, mode], True)


def withdrawal_account(balance: Balance, trader_id: int) -> Account:
    """The account a withdrawal of `balance`'s asset is judged on: the cross-margin
    account with its positions for the margin asset, the bare balance for any other."""
    if balance.asset != MARGIN_ASSET:
        return Account(balance.total, balance.locked)
    return account_of(balance, exposures_for(trader_id, balance.mode))


def withdrawable(balance: Balance, trader_id: int) -> Decimal:
    """What may leave: the available balance and, for the margin asset, no more than
    the free margin (equity at mark less position margins and what open orders and
    pending withdrawals lock). The caller holds the balance row's lock."""
    account = withdrawal_account(balance, trader_id)
    free = min(account.cash - account.locked, account.free)
    # Down to the ledger's 12 places: never more than is free, and a figure a client
    # can send back as an amount.
    return max(free, Decimal(0)).quantize(risk.MONEY_QUANTUM, rounding=ROUND_DOWN)


def account_of(balance: Balance | None, exposures: list[Exposure]) -> Account:
    """The margin account of a USDC balance row (None: empty) and its exposures. What
    pending withdrawals hold is money on its way out: it is neither cash nor locked
    here, so it counts toward no equity (maintenance, liquidation and bankruptcy
    prices); what is free is the same either way."""
    if balance is None:
        return Account(Decimal(0), Decimal(0), exposures)
    out = balance.withdrawing
    return Account(balance.total - out, balance.locked - out, exposures)


def accounts_with_positions() -> dict[tuple[int, str], Account]:
    """Every trading account that holds a position, in two queries: what a liquidation
    sweep scans."""
    users = sql.qn(get_user_model()._meta.db_table)
    where = f'p."trader_id" IN (SELECT "id" FROM {users} WHERE NOT "is_system")'  # noqa: S608
    exposures = _exposures(where, [], False)
    accounts: dict[tuple[int, str], Account] = {}
    for e in exposures:
        key = (e.position.trader_id, e.position.mode)
        accounts.setdefault(key, Account(Decimal(0), Decimal(0))).exposures.append(e)
    traders = {t for t, _ in accounts}
    for b in Balance.objects.filter(trader_id__in=traders, asset="USDC"):
        key = (b.trader_id, b.mode)
        if key in accounts:
            accounts[key] = account_of(b, accounts[key].exposures)
    return accounts


_POSITION = sql.Columns(Position, alias="p")
_MARKET = sql.Columns(Market, alias="m")
_MARK = sql.Columns(Book, ["mark_price"], alias="b")
_INDEX = sql.Columns(IndexPrice, ["price"], alias="i")


def _exposures(where: str, params: list, include_flat: bool) -> list[Exposure]:
    """Positions `where` selects (over `p`, the position table), each with its market,
    its book's mark and its underlying's index."""
    return _exposures_query(where, params, include_flat).run()


def _exposures_query(where: str, params: list, include_flat: bool) -> sql.Query:
    if not include_flat:
        where += ' AND p."size" <> 0'
    q = sql.qn
    text = (
        f"SELECT {_POSITION.sql}, {_MARKET.sql}, {_MARK.sql}, {_INDEX.sql}"  # noqa: S608
        f" FROM {q(Position._meta.db_table)} p"
        f' JOIN {q(Market._meta.db_table)} m ON m."id" = p."market_id"'
        f' LEFT JOIN {q(Book._meta.db_table)} b ON b."market_id" = p."market_id"'
        ' AND b."mode" = p."mode"'
        f' LEFT JOIN {q(IndexPrice._meta.db_table)} i ON i."underlying" = m."underlying"'
        f' WHERE {where} ORDER BY p."trader_id", p."market_id"'
    )
    return sql.Query(text, params, _exposures_built)


def _exposures_built(rows: list) -> list[Exposure]:
    out = []
    at_market = len(_POSITION)
    at_mark = at_market + len(_MARKET)
    db = sql.default_db()
    # One instance per market (a market's columns are the same on each of its rows, and
    # building one costs more than a position).
    markets: dict[int, Market] = {}
    for row in rows:
        p = _POSITION.build(row, 0, db)
        market = markets.get(p.market_id)
        if market is None:
            market = markets[p.market_id] = _MARKET.build(row, at_market, db)
        p.market = market
        (p.book_mark,) = _MARK.values(row, at_mark, db)
        (p.index_now,) = _INDEX.values(row, at_mark + 1, db)
        out.append(exposure_of(p))
    return out


def exposure_of(p: Position) -> Exposure:
    m = p.market
    entry = p.open_notional / p.size if p.size else None
    mark = getattr(p, "book_mark", None) or m.mark_price or entry or Decimal(0)
    index = getattr(p, "index_now", None) or m.index_price or mark
    return Exposure(
        position=p,
        kind=m.kind,
        size=p.size,
        open_notional=p.open_notional,
        mark=mark,
        index=index,
        leverage=risk.effective_leverage(p.leverage, m.max_leverage),
        maintenance_ratio=m.maintenance_margin_ratio,
        strike=m.strike,
        option_type=m.option_type,
    )
