"""Staff confirm deposits, approve or reject withdrawals, and read the solvency panel."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import Transfer, User
from accounts.services import paper_faucet_credit, vault
from accounts.tests.conftest import link
from accounts.tests.test_vault import deposit, deposited, tx, withdraw
from ledger.models import Balance, LedgerEntry
from trading.invariants import check_invariants

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    root = User.objects.create_superuser("root", password="pw-root-1234")
    c = Client()
    c.force_login(root)
    return c


def act(client: Client, model: str, action: str, ids, **extra):
    return client.post(
        f"/admin/accounts/{model}/",
        {"action": action, "_selected_action": list(ids), **extra},
        follow=True,
    )


def test_staff_confirm_and_reject_deposits(staff, api_alice, alice):
    deposit(api_alice, "300", n=1)
    deposit(api_alice, "5", n=2)
    one, two = Transfer.objects.order_by("id")
    act(staff, "deposit", "confirm", [one.pk])
    act(staff, "deposit", "confirm", [one.pk])  # again: skipped, not credited twice
    act(staff, "deposit", "reject", [two.pk])
    one.refresh_from_db()
    assert one.status == "CONFIRMED" and one.decided_by.username == "root"
    assert Transfer.objects.get(pk=two.pk).status == "REJECTED"
    assert Balance.objects.get(trader=alice, mode="REAL").total == D("300")
    assert LedgerEntry.objects.filter(reason="DEPOSIT").count() == 1
    assert check_invariants() == []


def test_staff_approve_withdrawal_with_its_tx_hash(staff, api_alice, alice, wallet):
    deposited(api_alice, alice, "1000")
    link(api_alice, alice, wallet)
    w = withdraw(api_alice, wallet.address, "250").json()
    page = act(staff, "withdrawal", "approve", [w["id"]])
    assert page.status_code == 200 and f'name="tx_{w["id"]}"' in page.content.decode()
    assert Transfer.objects.get(pk=w["id"]).status == "PENDING"  # the form only asks

    bad = act(staff, "withdrawal", "approve", [w["id"]], apply="1", **{f"tx_{w['id']}": "0x1"})
    assert "Refused: #" in bad.content.decode()
    assert Transfer.objects.get(pk=w["id"]).status == "PENDING"

    act(staff, "withdrawal", "approve", [w["id"]], apply="1", **{f"tx_{w['id']}": tx(42)})
    done = Transfer.objects.get(pk=w["id"])
    assert done.status == "APPROVED" and done.tx_hash == tx(42)
    b = Balance.objects.get(trader=alice, mode="REAL")
    assert (b.total, b.locked) == (D("750"), D("0"))
    assert check_invariants() == []


def test_staff_reject_withdrawal_releases_the_lock(staff, api_alice, alice, wallet):
    deposited(api_alice, alice, "100")
    link(api_alice, alice, wallet)
    w = withdraw(api_alice, wallet.address, "100").json()
    act(staff, "withdrawal", "reject", [w["id"]])
    b = Balance.objects.get(trader=alice, mode="REAL")
    assert (b.total, b.locked) == (D("100"), D("0"))
    assert Transfer.objects.get(pk=w["id"]).status == "REJECTED"


def test_view_only_staff_cannot_move_money(api_alice, alice):
    deposit(api_alice, "300")
    viewer = User.objects.create_user("viewer", password="pw-view-1234", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_deposit"))
    c = Client()
    c.force_login(viewer)
    assert c.get("/admin/accounts/deposit/").status_code == 200
    act(c, "deposit", "confirm", Transfer.objects.values_list("pk", flat=True))
    assert Transfer.objects.get().status == "PENDING"
    assert not Balance.objects.filter(trader=alice, mode="REAL").exists()


def test_solvency_panel(staff, api_alice, alice, wallet):
    deposited(api_alice, alice, "1000")
    link(api_alice, alice, wallet)
    withdraw(api_alice, wallet.address, "100")
    w = Transfer.objects.get(kind="WITHDRAWAL")
    vault.withdrawal_approve(withdrawal_id=w.pk, tx_hash=tx(9), by=None)
    withdraw(api_alice, wallet.address, "50")
    paper_faucet_credit(trader=alice)
    from accounts.selectors import solvency_report

    rows = {(r["asset"], r["mode"]): r for r in solvency_report()}
    real = rows[("USDC", "REAL")]
    assert real["balances"] == D("900") and real["locked"] == D("50")
    assert real["deposits"] == D("1000") and real["withdrawals"] == D("100")
    assert real["pendingWithdrawals"] == D("50") and real["gap"] == 0
    assert rows[("USDC", "PAPER")]["faucet"] == D("100000") and rows[("USDC", "PAPER")]["gap"] == 0
    page = staff.get("/admin/accounts/solvencyreport/")
    html = page.content.decode()
    assert page.status_code == 200 and "Solvency" in html and "<td>900</td>" in html
    assert "/admin/accounts/solvencyreport/" in staff.get("/admin/").content.decode()


def test_admin_pages_render(staff, api_alice, alice, wallet):
    deposited(api_alice, alice, "10")
    link(api_alice, alice, wallet)
    withdraw(api_alice, wallet.address, "1")
    for url in [
        "/admin/accounts/deposit/",
        "/admin/accounts/withdrawal/",
        "/admin/accounts/linkedwallet/",
        "/admin/accounts/apikey/",
        "/admin/accounts/systembalance/",
        "/admin/ledger/balance/?trader=alice",
        "/admin/ledger/ledgerentry/?trader=alice&mode__exact=REAL&reason__exact=DEPOSIT",
        f"/admin/accounts/user/{alice.pk}/change/",
        f"/admin/accounts/deposit/{Transfer.objects.filter(kind='DEPOSIT').get().pk}/change/",
    ]:
        r = staff.get(url)
        assert r.status_code == 200, url
    ledger = staff.get("/admin/ledger/ledgerentry/?trader=nobody").content.decode()
    assert "0 ledger entries" in ledger
