"""paperPoints, the leaderboard and the paper reset."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import User
from accounts.services import paper_faucet_credit
from accounts.services.paper import paper_reset
from accounts.tests.conftest import client_for
from ledger.models import Balance, LedgerEntry
from ledger.services import INSURANCE_ACCOUNT, system_account
from trading.invariants import check_invariants
from trading.models import Market, Order, Position
from trading.orders.place import order_place
from trading.tests.factories import MarketFactory, fund

D = Decimal
pytestmark = pytest.mark.django_db
GRANT = {"USDC": D("100000"), "CXPT": D("1000")}


def place(user, side, qty, price, market="BTC-PERP", mode="PAPER", type="LIMIT"):
    return order_place(
        trader=user,
        market=market,
        mode=mode,
        side=side,
        type=type,
        price=None if type == "MARKET" else D(price),
        qty=D(qty),
    )[0]


def trade(buyer, seller, qty, price, market="BTC-PERP"):
    """`seller` rests, `buyer` takes."""
    place(seller, "SELL", qty, price, market)
    place(buyer, "BUY", qty, price, market)


def paper(user, asset="USDC") -> Balance:
    return Balance.objects.get(trader=user, asset=asset, mode="PAPER")


def points(client) -> str:
    return client.get("/api/v1/me").json()["paperPoints"]


@pytest.fixture
def perp(db):
    return MarketFactory()


@pytest.fixture
def traders(alice, bob):
    for u in (alice, bob):
        paper_faucet_credit(trader=u)
    return User.objects.get(pk=alice.pk), User.objects.get(pk=bob.pk)


def test_points_are_the_realized_result_since_the_first_grant(perp, traders, api_alice, api_bob):
    alice, bob = traders
    fund(alice, "5000")  # a deposit is not a result
    assert points(api_alice) == "0"
    trade(alice, bob, "1", "64000")  # alice long, bob short
    trade(bob, alice, "1", "65000")  # closed: alice +1000, bob -1000
    # Taker fee 0.05%, maker fee 0.02%; each took once and made once.
    assert points(api_alice) == "955"  # 1000 - 32 (took at 64000) - 13 (made at 65000)
    assert points(api_bob) == "-1045.3"  # -1000 - 12.8 (made) - 32.5 (took)
    # Points equal what the paper balance gained from trading, to the unit.
    assert paper(alice).total - GRANT["USDC"] - D("5000") == D("955")


def test_leaderboard_ranks_traders_and_paginates(perp, traders, api_alice):
    alice, bob = traders
    trade(alice, bob, "1", "64000")
    trade(bob, alice, "1", "65000")
    carol = User.objects.create_user("carol", password="a-long-password-1")
    paper_faucet_credit(trader=carol)
    User.objects.create_user("dave", password="a-long-password-1")  # never took the faucet
    system_account(INSURANCE_ACCOUNT)
    first = api_alice.get("/api/v1/paper/leaderboard", {"limit": 2}).json()
    assert first["results"] == [
        {"rank": 1, "username": "alice", "paperPoints": "955"},
        {"rank": 2, "username": "carol", "paperPoints": "0"},
    ]
    rest = api_alice.get(
        "/api/v1/paper/leaderboard", {"limit": 2, "nextToken": first["nextToken"]}
    ).json()
    assert rest == {
        "results": [{"rank": 3, "username": "bob", "paperPoints": "-1045.3"}],
        "nextToken": None,
    }
    r = api_alice.get("/api/v1/paper/leaderboard", {"nextToken": "bm9wZQ"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_NEXT_TOKEN"


def test_reset_closes_everything_and_starts_afresh(perp, traders, api_alice):
    alice, bob = traders
    fund(alice, "50", mode="REAL")
    trade(alice, bob, "1", "64000")
    place(alice, "BUY", "0.5", "60000")  # resting, reserves margin
    Market.objects.filter(pk=perp.pk).update(mark_price=D("63000.3"))
    assert paper(alice).locked > 0

    r = api_alice.post("/api/v1/paper/reset")
    assert r.status_code == 200
    body = r.json()
    assert len(body["canceledOrderIds"]) == 1
    # Handed over at the mark rounded to the 0.5 tick.
    assert body["closedPositions"] == [
        {
            "market": "BTC-PERP",
            "side": "LONG",
            "size": "1",
            "price": "63000.5",
            "realizedPnl": "-999.5",
        }
    ]
    assert body["credited"] == {"USDC": "100000", "CXPT": "1000"}
    for asset, amount in GRANT.items():
        b = paper(alice, asset)
        assert (b.total, b.locked) == (amount, 0)
    assert Position.objects.get(trader=alice).size == 0
    assert not Order.objects.filter(trader=alice, status__in=["NEW", "PARTIALLY_FILLED"]).exists()
    insurance = system_account(INSURANCE_ACCOUNT)
    assert Position.objects.get(trader=insurance, market=perp, mode="PAPER").size == D("1")
    # Open interest stays balanced: bob is still short against the insurance fund.
    assert Position.objects.get(trader=bob).size == D("-1")
    assert Balance.objects.get(trader=alice, mode="REAL").total == D("50")  # REAL untouched
    assert points(api_alice) == "0"
    assert LedgerEntry.objects.filter(trader=alice, reason="PAPER_RESET").exists()
    assert check_invariants() == []

    # The faucet cooldown restarted with the fresh grant.
    r = api_alice.post("/api/v1/paper/faucet")
    assert r.status_code == 429 and r.json()["error"]["code"] == "FAUCET_COOLDOWN"


def test_reset_of_an_empty_account_and_twice(alice, api_alice):
    assert api_alice.post("/api/v1/paper/reset").json()["closedPositions"] == []
    assert paper(alice).total == GRANT["USDC"]
    User.objects.filter(pk=alice.pk).update(last_faucet_at=timezone.now() - timedelta(days=2))
    api_alice.post("/api/v1/paper/faucet")
    assert paper(alice).total == 2 * GRANT["USDC"]
    api_alice.post("/api/v1/paper/reset")
    assert paper(alice).total == GRANT["USDC"]
    assert check_invariants() == []


def test_insurance_losses_on_handed_over_positions_are_topped_up(perp, traders):
    alice, bob = traders
    carol = User.objects.create_user("carol", password="a-long-password-1")
    paper_faucet_credit(trader=carol)
    trade(alice, bob, "1", "64000")
    paper_reset(trader=User.objects.get(pk=alice.pk))  # insurance long 1 at 64000
    Market.objects.filter(pk=perp.pk).update(mark_price=D("60000"))
    paper_reset(trader=User.objects.get(pk=bob.pk))  # insurance buys back bob's short
    insurance = system_account(INSURANCE_ACCOUNT)
    assert Position.objects.get(trader=insurance).size == 0
    b = paper(insurance)
    assert b.total >= 0 and b.total >= b.locked
    assert check_invariants() == []


def test_reset_hands_over_options_in_cash(traders):
    alice, bob = traders
    opt = MarketFactory(
        symbol="BTC-X-60000-C",
        kind="OPTION",
        option_type="CALL",
        strike=D("60000"),
        tick_size=D("5"),
        lot_size=D("0.01"),
        min_notional=D("1"),
        mark_price=D("3100"),
        expiry_at=timezone.now() + timedelta(days=1),
    )
    trade(alice, bob, "1", "3000", market=opt.symbol)
    body = paper_reset(trader=User.objects.get(pk=alice.pk))
    assert body["closedPositions"][0]["price"] == "3100"
    assert paper(alice).total == GRANT["USDC"]
    assert check_invariants() == []


def test_reset_needs_a_trade_key(alice):
    from accounts.services.api_keys import api_key_create

    _, key = api_key_create(trader=alice, name="ro", scopes=["read"])
    r = client_for(alice, key).post("/api/v1/paper/reset")
    assert r.status_code == 403 and r.json()["error"]["code"] == "INSUFFICIENT_SCOPE"
