"""`GET /account`: the cross-margin account of one mode, with numbers worked by hand
(a perp at its mark, a short option, a pending withdrawal), its validation, its
authorization and its statement budget."""

from dataclasses import replace
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services.api_keys import api_key_create
from ledger.models import Balance
from trading import margin
from trading.models import Book, IndexPrice, Position
from trading.selectors import account_get
from trading.tests.conftest import client_for
from trading.tests.factories import UserFactory, call_market, fund

D = Decimal
pytestmark = pytest.mark.django_db

FIELDS = [
    "mode",
    "equity",
    "cash",
    "unrealizedPnl",
    "initialMargin",
    "maintenanceMargin",
    "marginRatio",
    "availableToTrade",
    "availableToWithdraw",
]


def hold(user, market, size: str, cost: str, mode: str = "REAL", leverage: str | None = None):
    Position.objects.create(
        trader=user,
        market=market,
        mode=mode,
        size=D(size),
        open_notional=D(cost),
        leverage=D(leverage) if leverage else None,
    )


def mark(market, price: str, mode: str = "REAL") -> None:
    Book.objects.filter(market=market, mode=mode).update(mark_price=D(price))


@pytest.fixture
def book_of_alice(perp, alice):
    """In REAL: 20,000 USDC, of which 2,000 locked by orders and 1,000 by a pending
    withdrawal; long 0.5 BTC-PERP bought for 31,000 (10x) at mark 65,000; short 0.1 of a
    64,000 call sold for 1,000 each, marked at 1,200 with BTC at 64,500."""
    fund(alice, "20000", mode="REAL")
    Balance.objects.filter(trader=alice, asset="USDC", mode="REAL").update(
        locked=D("3000"), withdrawing=D("1000")
    )
    call = call_market("BTC-64000-C")
    IndexPrice.objects.create(underlying="BTC", price=D("64500"), updated_at=timezone.now())
    mark(perp, "65000")
    mark(call, "1200")
    hold(alice, perp, "0.5", "31000", leverage="10")
    hold(alice, call, "-0.1", "-100")
    return alice


def test_the_account_worked_by_hand(api_alice, book_of_alice):
    r = api_alice.get("/api/v1/account", {"mode": "REAL"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert list(body) == FIELDS
    # cash: the balance less what the pending withdrawal holds: 20,000 - 1,000.
    # perp: value 0.5 x 65,000 - 31,000 = 1,500; initial 32,500 / 10 = 3,250;
    #   maintenance 32,500 x 0.5% = 162.5.
    # short call (in the money: no out-of-the-money relief): value -0.1 x 1,200 = -120,
    #   unrealized -120 - (-100) = -20; initial 0.1 x (15% x 64,500 + 1,200) = 1,087.5;
    #   maintenance 0.1 x (7.5% x 64,500 + 1,200) = 603.75.
    # equity 19,000 + 1,500 - 120 = 20,380; free 20,380 - 4,337.5 - 2,000 = 14,042.5,
    #   less than the unlocked cash (17,000).
    assert body == {
        "mode": "REAL",
        "equity": "20380",
        "cash": "19000",
        "unrealizedPnl": "1480",
        "initialMargin": "4337.5",
        "maintenanceMargin": "766.25",
        "marginRatio": "0.03759814",  # 766.25 / 20,380 = 0.0375981354..., rounded up
        "availableToTrade": "14042.5",
        "availableToWithdraw": "14042.5",
    }
    # equity = cash + unrealized PnL + what the options held cost (here: -100 received).
    assert D(body["equity"]) == D(body["cash"]) + D(body["unrealizedPnl"]) + D("-100")


def test_the_figures_are_the_margin_models_and_the_vaults(book_of_alice):
    """The one margin model and the vault's own rule, not a copy of them."""
    body = account_get(trader=book_of_alice, mode="REAL")
    balance = Balance.objects.get(trader=book_of_alice, asset="USDC", mode="REAL")
    account = margin.account_of(balance, margin.exposures_for(book_of_alice.pk, "REAL"))
    assert D(body["equity"]) == account.equity
    assert D(body["cash"]) == account.cash
    assert D(body["initialMargin"]) == account.initial
    assert D(body["maintenanceMargin"]) == account.maintenance
    assert D(body["availableToTrade"]) == margin.available(account)
    assert D(body["availableToWithdraw"]) == margin.withdrawable(balance, book_of_alice.pk)


def test_available_to_trade_is_what_the_risk_gate_lets_an_order_reserve(book_of_alice):
    balance = Balance.objects.get(trader=book_of_alice, asset="USDC", mode="REAL")
    rich = margin.account_of(balance, margin.exposures_for(book_of_alice.pk, "REAL"))
    # Limited by the free margin here; by the cash where a profit exceeds the margins:
    # the long at 80,000 is worth 9,000 and needs 4,000.
    (long,) = [replace(e, mark=D("80000")) for e in rich.exposures if not e.is_option]
    poor_in_cash = margin.Account(D("100"), D("40"), [long])
    for account, expected in ((rich, D("14042.5")), (poor_in_cash, D("60"))):
        available = margin.available(account)
        assert available == expected
        assert margin.shortfall(account, reserve=available) == 0
        assert margin.shortfall(account, reserve=available + D("0.000001")) > 0
    # Below zero free margin nothing may be reserved, and nothing is shown.
    broke = margin.Account(D("0"), D("0"), rich.exposures)
    assert broke.free < 0 and margin.available(broke) == 0


def test_an_account_past_bankruptcy_has_no_margin_ratio(api_alice, book_of_alice, perp):
    mark(perp, "20000")  # the long loses 21,000: equity 19,000 - 21,000 - 120 < 0
    body = api_alice.get("/api/v1/account", {"mode": "REAL"}).json()
    assert body["equity"] == "-2120"
    assert body["marginRatio"] is None
    assert body["availableToTrade"] == "0" and body["availableToWithdraw"] == "0"


def test_without_positions_the_ratio_is_zero_and_paper_withdraws_nothing(api_alice, alice):
    # alice holds 100,000 PAPER USDC and no position.
    body = api_alice.get("/api/v1/account", {"mode": "PAPER"}).json()
    assert body == {
        "mode": "PAPER",
        "equity": "100000",
        "cash": "100000",
        "unrealizedPnl": "0",
        "initialMargin": "0",
        "maintenanceMargin": "0",
        "marginRatio": "0",
        "availableToTrade": "100000",
        "availableToWithdraw": "0",  # the vault is REAL only
    }
    # A mode never funded is an empty account, not a 404.
    body = api_alice.get("/api/v1/account", {"mode": "REAL"}).json()
    assert body["equity"] == "0" and body["availableToWithdraw"] == "0"


def test_an_open_order_locks_what_it_reserves_from_available_to_trade(api_alice, perp):
    api_alice.post(
        "/api/v1/trade",
        {
            "market": "BTC-PERP",
            "mode": "PAPER",
            "side": "BUY",
            "type": "LIMIT",
            "price": "60000",
            "qty": "1",
        },
        format="json",
    )
    body = api_alice.get("/api/v1/account", {"mode": "PAPER"}).json()
    # 60,000 / 10 + 60,000 x 0.05% taker fee = 6,030 reserved.
    assert body["availableToTrade"] == "93970" and body["equity"] == "100000"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({}, "MISSING_FIELD"),
        ({"mode": ""}, "INVALID_MODE"),
        ({"mode": "paper"}, "INVALID_MODE"),
        ({"mode": "BOTH"}, "INVALID_MODE"),
    ],
)
def test_mode_is_one_of_the_two_and_required(api_alice, query, code):
    r = api_alice.get("/api/v1/account", query)
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": code,
        "message": r.json()["error"]["message"],
        "field": "mode",
    }


def test_only_the_trader_with_a_read_scope_reads_their_account(alice, bob):
    r = APIClient().get("/api/v1/account", {"mode": "PAPER"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    _, trade_only = api_key_create(trader=alice, name="bot", scopes=["trade"])
    r = client_for_key(trade_only).get("/api/v1/account", {"mode": "PAPER"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "INSUFFICIENT_SCOPE"
    _, read_only = api_key_create(trader=alice, name="ro", scopes=["read"])
    assert client_for_key(read_only).get("/api/v1/account", {"mode": "PAPER"}).status_code == 200
    # Bob's account is bob's own, whoever else is funded.
    fund(bob, "5", mode="REAL")
    assert client_for(bob).get("/api/v1/account", {"mode": "REAL"}).json()["cash"] == "5"


def client_for_key(secret: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return c


def test_the_read_keeps_to_its_statement_budget_whatever_the_account_holds(perp, db):
    """The API key, then the balance and the positions (one round trip on PostgreSQL),
    and in REAL what may be withdrawn: four statements, with one position or ten."""
    trader = UserFactory()
    fund(trader, "100000", mode="REAL")
    api = client_for(trader)
    api.get("/api/v1/account", {"mode": "REAL"})  # the key's last use is recorded once

    def statements() -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            assert api.get("/api/v1/account", {"mode": "REAL"}).status_code == 200
        return [q["sql"] for q in ctx.captured_queries]

    hold(trader, perp, "0.1", "6400")
    one = statements()
    for i in range(9):
        hold(trader, call_market(f"BTC-{60000 + i * 1000}-C"), "0.01", "10")
    ten = statements()
    assert len(one) <= 4, one
    assert len(ten) == len(one), ten
