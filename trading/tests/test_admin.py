"""Staff pause, resume and delist markets from the Django admin."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import User
from trading.models import Book, Market, Order
from trading.orders.place import order_place
from trading.tests.factories import MarketFactory, UserFactory, balance, fund

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client():
    admin = User.objects.create_superuser("root", password="pw-root-1234")
    c = Client()
    c.force_login(admin)
    return c


def act(client: Client, action: str, market: Market):
    return client.post(
        "/admin/trading/market/",
        {"action": action, "_selected_action": [market.pk]},
        follow=True,
    )


def test_admin_pause_resume_delist(staff_client):
    market = MarketFactory()
    trader = UserFactory()
    fund(trader, "100000")
    order_place(
        trader=trader,
        market="BTC-PERP",
        mode="PAPER",
        side="BUY",
        type="LIMIT",
        price=Decimal("60000"),
        qty=Decimal("0.1"),
    )
    assert act(staff_client, "pause", market).status_code == 200
    assert Market.objects.get().status == "PAUSED"
    act(staff_client, "resume", market)
    assert Market.objects.get().status == "ACTIVE"
    act(staff_client, "delist", market)
    assert Market.objects.get().status == "DELISTED"
    assert Order.objects.get().status == "CANCELED"
    assert balance(trader).locked == 0


def test_admin_pages_render(staff_client):
    market = MarketFactory()
    for url in [
        "/admin/trading/market/",
        "/admin/trading/order/",
        "/admin/ledger/ledgerentry/",
        "/admin/ledger/balance/",
        f"/admin/trading/market/{market.pk}/change/",
    ]:
        r = staff_client.get(url)
        assert r.status_code == 200, url
    # Read-only lists: no add, change or delete for anyone, staff included.
    assert staff_client.get("/admin/trading/order/add/").status_code == 403


def test_non_staff_cannot_use_admin():
    c = Client()
    c.force_login(UserFactory())
    r = c.get("/admin/trading/market/")
    assert r.status_code == 302 and "/admin/login/" in r["Location"]


def test_seed_demo_is_idempotent():
    call_command("seed_demo")
    counts = (Market.objects.count(), Book.objects.count(), User.objects.count())
    demo_total = balance(User.objects.get(username="demo")).total
    call_command("seed_demo")
    assert (Market.objects.count(), Book.objects.count(), User.objects.count()) == counts
    assert balance(User.objects.get(username="demo")).total == demo_total
    kinds = set(Market.objects.values_list("kind", flat=True))
    assert kinds == {"PERP", "FUTURE", "OPTION", "SPOT"}
    assert Market.objects.filter(symbol__in=["BTC-PERP", "ETH-PERP", "CXPT-USDC"]).count() == 3
    assert set(Market.objects.filter(kind="OPTION").values_list("option_type", flat=True)) == {
        "CALL",
        "PUT",
    }
