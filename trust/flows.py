"""Seeded random flows through the exchange's services.

A `Flow` sets up one small exchange (a perpetual, a dated future, a call option and a
spot market; a few traders funded in both modes through the vault and the paper faucet;
an insurance fund) and then drives it through every write the exchange has: orders of
each type and time in force, reduce-only orders and repeated client order ids, cancels
and cancel-all, index moves and marks, funding, liquidation sweeps, leverage changes,
pauses, expiry, deposits, withdrawals (requested, approved, rejected), the paper faucet
and paper resets. `step()` draws one operation from a seeded generator; each operation
is also a method taking explicit arguments, so a property-based state machine can drive
the same exchange with its own choices.

Among the operations, an adversary (Mallory, levered long, with an accomplice, Eve, who
has money to spare) tries the attacks on the risk rules at random (`attack`): limit
orders past the price band, a reduce-only sell far below the mark into Eve's bid, a
spot buy costing more than her free margin, a withdrawal of more than it. Each must be
refused; `counts` says how many were tried and refused, and `adversary_moved()` how
much value the two took from anyone else (0 when every attack failed).

Tests run inside one database transaction. `isolated()` gives each flow a savepoint that
is rolled back afterwards (the database stays small, so the checker stays cheap), with
foreign keys checked at once rather than at a commit that never comes; `committed()`
runs what the services leave for `on_commit` as soon as each operation returns, as a
real commit would: the engine-book cache is then exercised as in production, and the
invariant checker compares it with the open orders.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import LinkedWallet, Transfer, TransferKind, TransferStatus, User
from accounts.services import paper_faucet_credit
from accounts.services.paper import paper_reset
from accounts.services.vault import (
    deposit_confirm,
    deposit_record,
    deposit_reject,
    withdrawal_approve,
    withdrawal_reject,
    withdrawal_request,
)
from accounts.services.wallets import address_parse
from dexsite.errors import ExchangeError
from ledger import services as ledger_services
from ledger.models import Balance
from ledger.services import INSURANCE_ACCOUNT, system_account
from trading import margin
from trading.invariants import check_invariants
from trading.models import (
    CONDITIONAL_TYPES,
    Book,
    Fill,
    FundingSample,
    IndexPrice,
    Market,
    MarketKind,
    MarketStatus,
    Position,
)
from trading.orders.cancel import order_cancel, orders_cancel_all
from trading.orders.conditional import (
    orders_tpsl_arm,
    position_tpsl_set,
    tpsl_tidy,
    triggers_fire,
)
from trading.orders.place import order_place
from trading.services.books import engine_cache_clear
from trading.services.expiry import settle_expired
from trading.services.funding import funding_settle
from trading.services.liquidation import liquidations_run
from trading.services.markets import leverage_set, market_pause, market_resume
from trading.services.prices import index_set, marks_refresh
from trading.tests.factories import MarketFactory, UserFactory, call_market, fund, spot_market

D = Decimal
MODES = ("REAL", "PAPER")
SIDES = ("BUY", "SELL")
LIMIT_TIFS = ("GTC", "GTC", "IOC", "FOK", "POST_ONLY")
MARKET_TIFS = ("IOC", "IOC", "FOK")
PERP, FUTURE, OPTION, SPOT = range(4)
ASSETS = ("USDC", "CXPT")
LEVERAGES = (D(1), D(2), D(5), D(10), D(20))
INDEX_TICK = D("0.5")
SPOT_MID = D("1.25")
# The adversary's attacks (`Flow.attack`), and how far past the band an order is priced:
# one tick past its edge, or a fraction of the price further.
ATTACKS = ("out_of_band", "dump", "spot", "withdraw")
BEYOND = (None, D("0.01"), D("0.2"), D("0.6"))


def reset_process_caches() -> None:
    """Per-process caches outlive rolled-back rows: drop them, as a fresh process would."""
    engine_cache_clear()
    ledger_services._system_ids.clear()


@contextmanager
def isolated() -> Iterator[None]:
    """A savepoint rolled back at the end, with every constraint checked at once."""
    reset_process_caches()
    try:
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            yield
            transaction.set_rollback(True)
    finally:
        reset_process_caches()


@contextmanager
def committed() -> Iterator[None]:
    """Run the `on_commit` callbacks that the enclosed code left pending, as a commit
    would (callbacks of work that rolled back were already dropped by Django)."""
    # Read the list afresh each time: a savepoint rollback replaces it with a new one.
    start = len(connection.run_on_commit)
    try:
        yield
    finally:
        while len(connection.run_on_commit) > start:
            callbacks = connection.run_on_commit[start:]
            del connection.run_on_commit[start:]
            for _, callback, _robust in callbacks:
                callback()


class Flow:
    """One small exchange and the operations that drive it."""

    def __init__(self, seed: int, *, traders: int = 4, steps_hint: int = 200) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.steps_hint = steps_hint
        self.step_no = 0
        self.counts: Counter[str] = Counter()
        self.acknowledged: list[int] = []
        self.placed: list[tuple[User, int]] = []
        self.client_ids: dict[int, list[str]] = {}
        self.tx_count = 0
        self.paused: set[int] = set()
        self.index = D("64000")
        with committed():
            self._setup(traders)

    # -- setup ------------------------------------------------------------------------

    def _setup(self, n_traders: int) -> None:
        rng, seed = self.rng, self.seed
        now = timezone.now()
        index_set(underlying="BTC", price=self.index)
        # The spot market's bands are measured from its index.
        index_set(underlying="CXPT", price=SPOT_MID)
        self.markets: list[Market] = [
            MarketFactory(symbol=f"T{seed}-PERP", max_leverage=D("20")),
            MarketFactory(symbol=f"T{seed}-FUT", kind="FUTURE", expiry_at=now + timedelta(days=30)),
            call_market(f"T{seed}-C64000"),
            spot_market(f"T{seed}-USDC"),
        ]
        marks_refresh()
        insurance = system_account(INSURANCE_ACCOUNT)
        for mode in MODES:
            amount = rng.choice([0, 500, 50_000])
            if amount:
                fund(insurance, str(amount), mode=mode)
        self.traders: list[User] = [UserFactory() for _ in range(n_traders)]
        self.wallets: dict[int, str] = {}
        for i, t in enumerate(self.traders):
            address = address_parse(f"0x{seed % 2**64:016x}{i:024x}")
            LinkedWallet.objects.create(trader=t, address=address)
            self.wallets[t.pk] = address
            # Trader 0 is thinly funded and fully levered: a move of a few percent
            # takes it below maintenance, so that liquidations happen.
            low, high = (500, 3_000) if i == 0 else (2_000, 60_000)
            self.deposit(i, "USDC", D(rng.randint(low, high)), "confirm")
            self.deposit(i, "CXPT", D(5_000), "confirm")
            if i and rng.random() < 0.3:
                self.faucet(i, reset_cooldown=False)
            else:
                fund(t, str(rng.randint(low, high)), mode="PAPER")
                fund(t, "5000", asset="CXPT", mode="PAPER")
        for market_i in (PERP, FUTURE):
            for mode in MODES:
                self.set_leverage(0, market_i, mode, D(20))
        self._setup_adversary()

    def _setup_adversary(self) -> None:
        """Mallory: 5,000 USDC in each mode, long the perp at 10x for 90% of it, bought
        from Eve; Eve: deep pockets in both assets. No draw from the generator: the
        rest of the flow is what it would be without them."""
        self.mallory, self.eve = UserFactory(), UserFactory()
        address = address_parse(f"0x{self.seed % 2**64:016x}{0xADFE:024x}")
        LinkedWallet.objects.create(trader=self.mallory, address=address)
        self.wallets[self.mallory.pk] = address
        perp = self.markets[PERP]
        price = self.index
        lots = int(D(4500) * 10 / price / perp.lot_size)
        for mode in MODES:
            fund(self.mallory, "5000", mode=mode)
            fund(self.eve, "1000000", mode=mode)
            fund(self.eve, "1000000", asset="CXPT", mode=mode)
            leverage_set(trader=self.mallory, market=perp, mode=mode, leverage=D(10))
            for who, side in ((self.eve, "SELL"), (self.mallory, "BUY")):
                order_place(
                    trader=who,
                    market=perp.symbol,
                    mode=mode,
                    side=side,
                    type="LIMIT",
                    time_in_force="GTC",
                    price=price,
                    qty=perp.lot_size * lots,
                )

    # -- running ----------------------------------------------------------------------

    def _run(self, name: str, action: Callable[[], Any]) -> Any:
        try:
            with committed():
                result = action()
        except ExchangeError as e:
            self.counts[f"{name}:{e.code}"] += 1
            return None
        self.counts[f"{name}:ok"] += 1
        return result

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def check(self) -> list[str]:
        return check_invariants(acknowledged=self.acknowledged)

    def mid(self, market_i: int, mode: str) -> Decimal:
        if market_i in (PERP, FUTURE):
            return self.index
        if market_i == SPOT:
            return SPOT_MID
        mark = (
            Book.objects.filter(market=self.markets[OPTION], mode=mode)
            .values_list("mark_price", flat=True)
            .first()
        )
        return mark or D("1800")

    def step(self) -> None:
        """One operation, drawn from the seeded generator."""
        rng = self.rng
        self.step_no += 1
        n = len(self.traders)
        trader_i = 0 if rng.random() < 0.2 else rng.randrange(n)
        mode = rng.choice(MODES)
        if self.step_no == int(self.steps_hint * 0.85) and rng.random() < 0.5:
            self.expire(rng.choice((FUTURE, OPTION)))
            return
        if self.paused and rng.random() < 0.1:
            self.toggle_pause(min(self.paused))
            return
        roll = rng.random()
        if roll < 0.07:
            self.cancel(rng.randrange(1 << 30), as_owner=rng.random() < 0.9)
        elif roll < 0.09:
            market_i = rng.choice((None, None, PERP, FUTURE, OPTION, SPOT))
            self.cancel_all(trader_i, mode, market_i)
        elif roll < 0.15:
            self.move_index(rng.randint(-800, 800))
        elif roll < 0.17:
            self.funding(mode, rng.randint(-30, 30))
        elif roll < 0.20:
            self.liquidate()
        elif roll < 0.22:
            self.withdraw(trader_i, rng.choice(ASSETS), rng.choice((10, 50, 100, 120)))
        elif roll < 0.235:
            self.decide_withdrawal(rng.randrange(1 << 30), approve=rng.random() < 0.6)
        elif roll < 0.245:
            outcome = rng.choice(("confirm", "reject", "pending"))
            self.deposit(trader_i, rng.choice(ASSETS), D(rng.randint(1, 20_000)), outcome)
        elif roll < 0.25:
            self.faucet(trader_i, reset_cooldown=rng.random() < 0.5)
        elif roll < 0.253:
            self.paper_reset(trader_i)
        elif roll < 0.263:
            leverage = rng.choice((*LEVERAGES, D(20), D(20)))
            self.set_leverage(trader_i, rng.choice((PERP, FUTURE)), mode, leverage)
        elif roll < 0.268:
            self.toggle_pause(rng.randrange(len(self.markets)))
        elif roll < 0.31:
            self.lever_up(rng.randrange(1, n), rng.choice((PERP, FUTURE)), mode, rng.choice(SIDES))
        elif roll < 0.37:
            self.conditional(
                trader_i,
                rng.choice((PERP, PERP, FUTURE, SPOT)),
                mode,
                rng.choice(SIDES),
                rng.choice(CONDITIONAL_TYPES),
                rng.choice(("MARK", "LAST")),
                rng.randint(-30, 30),
                rng.randint(1, 200),
            )
        elif roll < 0.38:
            self.tpsl(
                trader_i, rng.choice((PERP, FUTURE)), mode, rng.randint(1, 40), rng.randint(1, 40)
            )
        elif roll < 0.41:
            self.attack(
                rng.choice(ATTACKS),
                mode,
                rng.randrange(len(self.markets)),
                rng.choice(SIDES),
                rng.choice(BEYOND),
            )
        else:
            market_i = rng.choice((PERP, PERP, PERP, FUTURE, FUTURE, OPTION, OPTION, SPOT, SPOT))
            market_order = rng.random() < 0.15
            lots = rng.randint(1, 200 if market_i == OPTION else 400)
            if market_i in (PERP, FUTURE) and rng.random() < 0.25:
                # Large enough to lever an account up to where a move liquidates it.
                lots *= 8
            self.place(
                trader_i,
                market_i,
                mode,
                rng.choice(SIDES),
                "MARKET" if market_order else "LIMIT",
                rng.choice(MARKET_TIFS if market_order else LIMIT_TIFS),
                rng.randint(-8, 8),
                lots,
                reduce_only=market_i != SPOT and rng.random() < 0.1,
                client_id=rng.choice((None,) * 8 + ("new", "repeat")),
                tpsl_bp=rng.randint(5, 300)
                if market_i in (PERP, FUTURE) and rng.random() < 0.15
                else 0,
            )

    # -- operations -------------------------------------------------------------------

    def place(
        self,
        trader_i: int,
        market_i: int,
        mode: str,
        side: str,
        type_: str,
        tif: str,
        offset: int,
        lots: int,
        *,
        reduce_only: bool = False,
        client_id: str | None = None,
        tpsl_bp: int = 0,
    ) -> None:
        """`tpsl_bp`: attach a take-profit and a stop-loss that far (in basis points) from
        the mid, on the order's side of it (wrong ones where it is a reduce-only order or
        a limit past the mid: refused)."""
        trader = self.traders[trader_i]
        market = self.markets[market_i]
        tick = market.tick_size
        mid = (self.mid(market_i, mode) / tick).to_integral_value() * tick
        price = None
        if type_ == "LIMIT":
            price = max(tick, mid + offset * tick)
        take_profit = stop_loss = None
        if tpsl_bp:
            away = (mid * D(tpsl_bp) / 10_000 / tick).to_integral_value() * tick + tick
            up, down = mid + away, max(tick, mid - away)
            take_profit, stop_loss = (up, down) if side == "BUY" else (down, up)
        known = self.client_ids.setdefault(trader.pk, [])
        coid = None
        if client_id == "repeat" and known:
            coid = self.rng.choice(known)
        elif client_id is not None:
            coid = f"c{self.seed}-{len(self.acknowledged)}-{self.step_no}"
        got = self._run(
            "place",
            lambda: order_place(
                trader=trader,
                market=market.symbol,
                mode=mode,
                side=side,
                type=type_,
                time_in_force=tif,
                price=price,
                qty=market.lot_size * lots,
                reduce_only=reduce_only,
                client_order_id=coid,
                take_profit=take_profit,
                stop_loss=stop_loss,
            ),
        )
        if got is None:
            return
        body, created = got
        self.acknowledged.append(int(body["id"]))
        if created:
            self.placed.append((trader, int(body["id"])))
            if coid is not None:
                known.append(coid)
        else:
            self.counts["place:repeat"] += 1

    def lever_up(self, counterparty_i: int, market_i: int, mode: str, side: str) -> None:
        """Trader 0 takes a position of nearly all that its free cash carries at 20x
        from a quote the counterparty rests for it at the mid."""
        market = self.markets[market_i]
        row = Balance.objects.filter(trader=self.traders[0], asset="USDC", mode=mode).first()
        free = row.total - row.locked if row else D(0)
        price = (self.mid(market_i, mode) / market.tick_size).to_integral_value() * market.tick_size
        lots = int(free * D("19.5") / price / market.lot_size)
        if lots <= 0:
            return
        other = "SELL" if side == "BUY" else "BUY"
        self.place(counterparty_i, market_i, mode, other, "LIMIT", "GTC", 0, lots)
        self.place(0, market_i, mode, side, "LIMIT", "IOC", 0, lots)
        self.counts["lever_up"] += 1

    def cancel(self, pick: int, *, as_owner: bool = True) -> None:
        if not self.placed:
            return
        owner, order_id = self.placed[pick % len(self.placed)]
        who = owner if as_owner else self.traders[pick % len(self.traders)]
        self._run("cancel", lambda: order_cancel(trader=who, order_id=order_id))

    def cancel_all(self, trader_i: int, mode: str | None, market_i: int | None) -> None:
        symbol = None if market_i is None else self.markets[market_i].symbol
        trader = self.traders[trader_i]
        self._run("cancel_all", lambda: orders_cancel_all(trader=trader, mode=mode, market=symbol))

    def conditional(
        self,
        trader_i: int,
        market_i: int,
        mode: str,
        side: str,
        type_: str,
        trigger_by: str,
        offset_ticks: int,
        lots: int,
    ) -> None:
        """A stop or take-profit, its trigger some ticks from the mid (either side: a
        trigger already crossed is refused, WOULD_TRIGGER)."""
        trader, market = self.traders[trader_i], self.markets[market_i]
        tick = market.tick_size
        mid = (self.mid(market_i, mode) / tick).to_integral_value() * tick
        trigger = max(tick, mid + offset_ticks * 10 * tick)
        limit = type_.endswith("_LIMIT")
        trailing = type_ == "TRAILING_STOP_MARKET"
        # A trailing stop's trigger is the exchange's: it takes a distance instead.
        rate = D(abs(offset_ticks) % 20 + 1) / 2 if trailing else None
        got = self._run(
            "conditional",
            lambda: order_place(
                trader=trader,
                market=market.symbol,
                mode=mode,
                side=side,
                type=type_,
                time_in_force="GTC" if limit else "IOC",
                price=trigger if limit else None,
                qty=market.lot_size * lots,
                reduce_only=market_i != SPOT and self.rng.random() < 0.5,
                trigger_price=None if trailing else trigger,
                trigger_by=trigger_by,
                callback_rate=rate,
            ),
        )
        if got is not None:
            self.acknowledged.append(int(got[0]["id"]))
            self.placed.append((trader, int(got[0]["id"])))
            if trailing:
                self.counts["trailing:placed"] += 1

    def tpsl(self, trader_i: int, market_i: int, mode: str, up_bp: int, down_bp: int) -> None:
        """A take-profit and a stop-loss on the trader's position, if it has one."""
        trader, market = self.traders[trader_i], self.markets[market_i]
        tick = market.tick_size
        mid = self.mid(market_i, mode)

        def at(bp: int) -> Decimal:
            return max(tick, (mid * (1 + D(bp) / 10_000) / tick).to_integral_value() * tick)

        size = Position.objects.filter(trader=trader, market=market, mode=mode).values_list(
            "size", flat=True
        ).first() or D(0)
        up, down = at(up_bp * 10), at(-down_bp * 10)
        tp, sl = (up, down) if size >= 0 else (down, up)
        self._run(
            "tpsl",
            lambda: position_tpsl_set(
                trader=trader, symbol=market.symbol, mode=mode, take_profit=tp, stop_loss=sl
            ),
        )

    def move_index(self, bp: int) -> None:
        moved = self.index * (1 + D(bp) / 10_000)
        self.index = max(INDEX_TICK, (moved / INDEX_TICK).to_integral_value() * INDEX_TICK)

        def action() -> None:
            index_set(underlying="BTC", price=self.index)
            marks_refresh()

        self._run("index", action)
        # The clock's sweeps that follow a move of the marks.
        self._run("triggers", triggers_fire)
        self._run("tpsl-tidy", tpsl_tidy)
        armed = self._run("tpsl-arm", orders_tpsl_arm)
        self.counts["tpsl_armed"] += len(armed or ())

    def funding(self, mode: str, premium_bp: int) -> None:
        book = Book.objects.get(market=self.markets[PERP], mode=mode)
        now = timezone.now()

        def action() -> Any:
            FundingSample.objects.create(book=book, premium=D(premium_bp) / 10_000, at=now)
            Book.objects.filter(pk=book.pk).update(next_funding_at=now - timedelta(seconds=1))
            return funding_settle(book_id=book.pk, now=now)

        if self._run("funding", action) is not None:
            self.counts["funding:settled"] += 1

    def liquidate(self) -> None:
        done = self._run("liquidate", liquidations_run)
        self.counts["liquidations"] += len(done or ())

    def withdraw(self, trader_i: int, asset: str, percent: int) -> None:
        trader = self.traders[trader_i]
        row = Balance.objects.filter(trader=trader, asset=asset, mode="REAL").first()
        available = row.total - row.locked if row else D(0)
        amount = (available * percent / 100).quantize(D("0.01"), rounding=ROUND_DOWN)
        if amount <= 0:
            amount = D(1)
        self._run(
            "withdraw",
            lambda: withdrawal_request(
                trader=trader, asset=asset, amount=amount, address=self.wallets[trader.pk]
            ),
        )

    def decide_withdrawal(self, pick: int, *, approve: bool) -> None:
        pending = list(
            Transfer.objects.filter(
                kind=TransferKind.WITHDRAWAL,
                status=TransferStatus.PENDING,
                trader__in=self.traders,
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not pending:
            return
        wid = pending[pick % len(pending)]
        if approve:
            tx = self._tx_hash()
            self._run(
                "withdraw_approve",
                lambda: withdrawal_approve(withdrawal_id=wid, tx_hash=tx, by=None),
            )
        else:
            self._run("withdraw_reject", lambda: withdrawal_reject(withdrawal_id=wid, by=None))

    def deposit(self, trader_i: int, asset: str, amount: Decimal, outcome: str) -> None:
        trader = self.traders[trader_i]
        tx = self._tx_hash()
        got = self._run(
            "deposit",
            lambda: deposit_record(trader=trader, asset=asset, amount=amount, tx_hash=tx),
        )
        if got is None or outcome == "pending":
            return
        deposit, _ = got
        if outcome == "confirm":
            self._run("deposit_confirm", lambda: deposit_confirm(deposit_id=deposit.pk, by=None))
        else:
            self._run("deposit_reject", lambda: deposit_reject(deposit_id=deposit.pk, by=None))

    def faucet(self, trader_i: int, *, reset_cooldown: bool) -> None:
        trader = self.traders[trader_i]
        if reset_cooldown:
            User.objects.filter(pk=trader.pk).update(last_faucet_at=None)
        self._run("faucet", lambda: paper_faucet_credit(trader=trader))

    def paper_reset(self, trader_i: int) -> None:
        trader = self.traders[trader_i]
        self._run("paper_reset", lambda: paper_reset(trader=trader))

    def set_leverage(self, trader_i: int, market_i: int, mode: str, leverage: Decimal) -> None:
        trader, market = self.traders[trader_i], self.markets[market_i]
        self._run(
            "leverage",
            lambda: leverage_set(trader=trader, market=market, mode=mode, leverage=leverage),
        )

    def toggle_pause(self, market_i: int) -> None:
        market = Market.objects.get(pk=self.markets[market_i].pk)
        if market.status == MarketStatus.ACTIVE:
            self._run("pause", lambda: market_pause(market=market))
            self.paused.add(market_i)
        elif market.status == MarketStatus.PAUSED:
            self._run("resume", lambda: market_resume(market=market))
            self.paused.discard(market_i)

    def expire(self, market_i: int) -> None:
        market = self.markets[market_i]
        Market.objects.filter(pk=market.pk).update(expiry_at=timezone.now())
        done = self._run("expire", settle_expired)
        self.counts["settlements"] += len(done or ())

    # -- the adversary ----------------------------------------------------------------

    def attack(
        self, kind: str, mode: str, market_i: int, side: str, beyond: Decimal | None
    ) -> None:
        """One attempt of Mallory's (with Eve's help), which must be refused:

        - out_of_band: a limit order on `market_i`, `side`, priced past the band;
        - dump: a reduce-only IOC sell of her perp position into a bid of Eve's resting
          past the band below the mark (the accomplice buys it cheap, her losses left
          to the insurance fund);
        - spot: a spot buy from Eve, at a fair price, costing more than Mallory's free
          margin (cash that carries her position leaving as spot);
        - withdraw: a REAL withdrawal of more than her free margin.

        Eve's quote is cancelled after the attempt, so that nobody else trades with
        it. Counted in `counts`: attacks, attacks:refused, attack:KIND:CODE and
        attack:KIND:accepted (an attack that got through)."""
        perp = self.markets[PERP]
        if kind == "out_of_band":
            price = self._past_band(market_i, mode, side, beyond)
            if price is None:
                return
            self._attempt(kind, lambda: self._order(self.mallory, market_i, mode, side, price))
        elif kind == "dump":
            price = self._past_band(PERP, mode, "SELL", beyond)
            held = next(
                (
                    e.size
                    for e in margin.exposures_for(self.mallory.pk, mode)
                    if e.position.market_id == perp.pk
                ),
                D(0),
            )
            qty = held if held > 0 else perp.lot_size
            bid = None if price is None else self._quote(self.eve, PERP, mode, "BUY", price, qty)
            if bid is None:
                return
            self._attempt(
                kind,
                lambda: self._order(
                    self.mallory, PERP, mode, "SELL", price, qty, tif="IOC", reduce_only=True
                ),
            )
            self._run("attack_quote", lambda: order_cancel(trader=self.eve, order_id=bid))
        elif kind == "spot":
            spot = self.markets[SPOT]
            price = self._on_tick(spot, SPOT_MID * (1 + spot.price_band / 2), up=True)
            room = max(D(0), self._free(self.mallory, mode))
            lots = int((room + spot.min_notional) / price / spot.lot_size) + 1
            ask = self._quote(self.eve, SPOT, mode, "SELL", price, spot.lot_size * lots)
            if ask is None:
                return
            self._attempt(
                kind,
                lambda: self._order(
                    self.mallory, SPOT, mode, "BUY", price, spot.lot_size * lots, tif="IOC"
                ),
            )
            self._run("attack_quote", lambda: order_cancel(trader=self.eve, order_id=ask))
        else:
            room = max(D(0), self._free(self.mallory, "REAL"))
            amount = room.quantize(D("0.01"), rounding=ROUND_DOWN) + 1
            address = self.wallets[self.mallory.pk]
            self._attempt(
                kind,
                lambda: withdrawal_request(
                    trader=self.mallory, asset="USDC", amount=amount, address=address
                ),
            )

    def _attempt(self, kind: str, action: Callable[[], Any]) -> None:
        self.counts["attacks"] += 1
        try:
            with committed():
                action()
        except ExchangeError as e:
            self.counts["attacks:refused"] += 1
            self.counts[f"attack:{kind}:{e.code}"] += 1
            return
        self.counts[f"attack:{kind}:accepted"] += 1

    def _order(
        self,
        who: User,
        market_i: int,
        mode: str,
        side: str,
        price: Decimal,
        qty: Decimal | None = None,
        *,
        tif: str = "GTC",
        reduce_only: bool = False,
    ) -> dict:
        market = self.markets[market_i]
        if qty is None:
            # The least that meets the market's minimum order value.
            qty = market.lot_size * (int(market.min_notional / price / market.lot_size) + 1)
        body, _ = order_place(
            trader=who,
            market=market.symbol,
            mode=mode,
            side=side,
            type="LIMIT",
            time_in_force=tif,
            price=price,
            qty=qty,
            reduce_only=reduce_only,
        )
        return body

    def _quote(
        self, who: User, market_i: int, mode: str, side: str, price: Decimal, qty: Decimal
    ) -> int | None:
        """A post-only quote of the accomplice's (it trades with nobody as it is
        placed); its id, or None where it could not rest."""
        got = self._run(
            "attack_quote",
            lambda: self._order(who, market_i, mode, side, price, qty, tif="POST_ONLY"),
        )
        return int(got["id"]) if got is not None and got["status"] == "NEW" else None

    def _past_band(
        self, market_i: int, mode: str, side: str, beyond: Decimal | None
    ) -> Decimal | None:
        """A price past the band on `side`'s aggressive side: one tick past its edge
        (`beyond` None), or `beyond` of it further; None where the market has no price
        to measure the band from, or the band leaves no price below it."""
        market = Market.objects.get(pk=self.markets[market_i].pk)
        if market.kind == MarketKind.SPOT:
            reference = (
                IndexPrice.objects.filter(underlying=market.underlying)
                .values_list("price", flat=True)
                .first()
            )
        else:
            book = Book.objects.get(market=market, mode=mode)
            reference = book.mark_price or market.mark_price
        if not reference:
            return None
        tick = market.tick_size
        if side == "BUY":
            edge = reference * (1 + market.price_band)
            far = edge * (1 + (beyond or 0))
            return self._on_tick(market, far, up=False) + tick
        edge = reference * (1 - market.price_band)
        far = edge * (1 - (beyond or 0))
        price = self._on_tick(market, far, up=True) - tick
        return price if price > 0 else None

    @staticmethod
    def _on_tick(market: Market, price: Decimal, *, up: bool) -> Decimal:
        rounding = ROUND_CEILING if up else ROUND_FLOOR
        return (price / market.tick_size).to_integral_value(rounding) * market.tick_size

    @staticmethod
    def _free(who: User, mode: str) -> Decimal:
        """What `who` could spend or withdraw in `mode`: the lesser of free cash and
        free margin (the risk gate's measure)."""
        row = Balance.objects.filter(trader=who, asset="USDC", mode=mode).first()
        account = margin.account_of(row, margin.exposures_for(who.pk, mode))
        return min(account.cash - account.locked, account.free)

    def adversary_moved(self) -> tuple[int, Decimal]:
        """The fills of Mallory and Eve with anyone else (the risk engine's aside), and
        the value they took in them against the mark each was matched at: a buy gains
        mark - price a unit, a sell price - mark."""
        pair = (self.mallory.pk, self.eve.pk)
        fills = (
            Fill.objects.filter(trader_id__in=pair, trade__liquidation=False)
            .exclude(trade__taker_order__trader_id__in=pair, trade__maker_order__trader_id__in=pair)
            .values_list("side", "qty", "price", "trade__mark_price")
        )
        moved = D(0)
        count = 0
        for side, qty, price, mark in fills:
            count += 1
            if mark is not None:
                moved += qty * (mark - price) * (1 if side == "BUY" else -1)
        return count, moved

    def _tx_hash(self) -> str:
        self.tx_count += 1
        return f"0x{self.seed % 2**128:032x}{self.tx_count:032x}"
