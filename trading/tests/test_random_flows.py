"""Seeded random order flows through the service on every market kind and both modes;
the invariant checker after each flow."""

import random
from decimal import Decimal

import pytest

from dexsite.errors import ExchangeError
from trading.invariants import check_invariants
from trading.models import Fill
from trading.services.orders import order_cancel, order_place, orders_cancel_all
from trading.tests.factories import MarketFactory, UserFactory, fund, spot_market

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("seed", range(4))
def test_random_flow_keeps_every_invariant(seed):
    rng = random.Random(seed)
    markets = [(MarketFactory(), D("64000")), (spot_market(), D("1.25"))]
    traders = [UserFactory() for _ in range(4)]
    for t in traders:
        for mode in ("REAL", "PAPER"):
            fund(t, str(rng.randint(2_000, 200_000)), mode=mode)
            fund(t, "5000", asset="CXPT", mode=mode)
    placed: list[tuple] = []
    codes: set[str] = set()
    for _ in range(150):
        market, mid = rng.choice(markets)
        trader = rng.choice(traders)
        mode = rng.choice(["REAL", "PAPER"])
        roll = rng.random()
        try:
            if roll < 0.12 and placed:
                owner, oid = rng.choice(placed)
                order_cancel(trader=owner, order_id=oid)
            elif roll < 0.15:
                orders_cancel_all(trader=trader, mode=mode)
            else:
                typ = "MARKET" if roll < 0.3 else "LIMIT"
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
        except ExchangeError as e:
            codes.add(e.code)
    assert Fill.objects.exists()
    assert check_invariants() == []
