"""Seeded random flows through the services: orders of every type on every market kind
and both modes, cancels, index moves, funding and liquidation sweeps; the invariant
checker after each flow (conservation, balances = ledger, locks = reservations, open
interest long = short, no overfill, books uncrossed)."""

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import User
from accounts.services import system_account
from dexsite.errors import ExchangeError
from trading.invariants import check_invariants
from trading.models import Book, Fill, FundingSample
from trading.services.funding import funding_settle
from trading.services.liquidation import liquidations_run
from trading.services.orders import order_cancel, order_place, orders_cancel_all
from trading.services.prices import index_set, marks_refresh
from trading.tests.factories import MarketFactory, UserFactory, fund, spot_market

D = Decimal
pytestmark = pytest.mark.django_db


def test_random_flows_keep_every_invariant(flows: int = 6, steps: int = 120):
    for seed in range(flows):
        run_flow(seed, steps)
        assert check_invariants() == [], f"seed {seed}"


def run_flow(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    perp = MarketFactory(symbol=f"P{seed}-PERP", max_leverage=D("20"))
    spot = (
        spot_market()
        if seed == 0
        else MarketFactory(
            symbol=f"S{seed}-USDC",
            kind="SPOT",
            base="CXPT",
            underlying="CXPT",
            tick_size=D("0.0001"),
            lot_size=D("0.1"),
            min_notional=D("1"),
            max_leverage=D("1"),
            mark_price=None,
        )
    )
    markets = [(perp, D("64000")), (spot, D("1.25"))]
    index = D("64000")
    index_set(underlying="BTC", price=index)
    fund(system_account(User.INSURANCE_ACCOUNT), str(rng.choice([0, 500, 50_000])))
    traders = [UserFactory() for _ in range(4)]
    for t in traders:
        for mode in ("REAL", "PAPER"):
            fund(t, str(rng.randint(2_000, 60_000)), mode=mode)
            fund(t, "5000", asset="CXPT", mode=mode)
    placed: list[tuple] = []
    for _ in range(steps):
        market, mid = rng.choice(markets)
        if market.kind == "PERP":
            mid = index
        trader = rng.choice(traders)
        mode = rng.choice(["REAL", "PAPER"])
        roll = rng.random()
        try:
            if roll < 0.08 and placed:
                owner, oid = rng.choice(placed)
                order_cancel(trader=owner, order_id=oid)
            elif roll < 0.10:
                orders_cancel_all(trader=trader, mode=mode)
            elif roll < 0.16:
                index = (index * (1 + D(rng.randint(-400, 400)) / 10_000)).quantize(D("0.5"))
                index_set(underlying="BTC", price=index)
                marks_refresh()
            elif roll < 0.19:
                book = Book.objects.get(market=perp, mode=mode)
                now = timezone.now()
                FundingSample.objects.create(
                    book=book, premium=D(rng.randint(-30, 30)) / 10_000, at=now
                )
                Book.objects.filter(pk=book.pk).update(next_funding_at=now - timedelta(seconds=1))
                funding_settle(book_id=book.pk, now=now)
            elif roll < 0.22:
                liquidations_run()
            else:
                typ = "MARKET" if roll < 0.35 else "LIMIT"
                tif = (
                    rng.choice(["GTC", "GTC", "IOC", "FOK", "POST_ONLY"])
                    if typ == "LIMIT"
                    else "IOC"
                )
                body, _ = order_place(
                    trader=trader,
                    market=market.symbol,
                    mode=mode,
                    side=rng.choice(["BUY", "SELL"]),
                    type=typ,
                    time_in_force=tif,
                    price=None if typ == "MARKET" else mid + rng.randint(-8, 8) * market.tick_size,
                    qty=market.lot_size * rng.randint(1, 400),
                    reduce_only=market.kind != "SPOT" and rng.random() < 0.1,
                )
                placed.append((trader, body["id"]))
        except ExchangeError:
            pass
    assert Fill.objects.exists()
