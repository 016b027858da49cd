"""Wallet linking by an EIP-4361 message and an EIP-191 signature, with real keys."""

import re
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.middleware.csrf import get_token
from django.test import RequestFactory
from django.utils import timezone
from eth_account import Account
from rest_framework.test import APIClient

from accounts.models import LinkedWallet, WalletChallenge
from accounts.tests.conftest import challenge, client_for, link, link_path, sign

pytestmark = pytest.mark.django_db


def answer(client, user, account, body, *, signer=None, address=None, message=None):
    return client.post(
        link_path(user),
        {
            "address": address or account.address,
            "signature": sign(signer or account, message or body["message"]),
            "nonce": body["nonce"],
        },
        format="json",
    )


def code(r) -> str:
    return r.json()["error"]["code"]


def test_challenge_is_an_eip4361_message_naming_site_trader_and_nonce(api_alice, alice, wallet):
    body = challenge(api_alice, alice, wallet.address.lower())
    lines = body["message"].split("\n")
    assert lines[0] == "testserver wants you to sign in with your Ethereum account:"
    assert lines[1] == wallet.address  # EIP-55 checksummed, whatever case was sent
    assert lines[2] == "" and str(alice.trader_id) in lines[3] and lines[4] == ""
    fields = dict(line.split(": ", 1) for line in lines[5:])
    assert fields["URI"] == "http://testserver/"
    assert fields["Version"] == "1" and fields["Chain ID"] == "1"
    assert fields["Nonce"] == body["nonce"] and re.fullmatch(r"[A-Za-z0-9]{8,}", body["nonce"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["Issued At"])
    assert fields["Expiration Time"] > fields["Issued At"]
    assert body["expiresAt"] > int(timezone.now().timestamp() * 1000)


def test_link_then_me_lists_the_checksummed_address(api_alice, alice, wallet):
    r = link(api_alice, alice, wallet)
    assert r.status_code == 201 and r.json()["address"] == wallet.address
    assert api_alice.get("/api/v1/me").json()["linkedWallets"] == [wallet.address]
    # Linking it again (new challenge) is not an error: the same link comes back.
    again = link(api_alice, alice, wallet)
    assert again.status_code == 200 and LinkedWallet.objects.count() == 1


def test_the_trade_page_shows_the_linked_wallets(api_alice, alice, wallet):
    """The trade page is trading's; the URLconf hands it accounts' reader of wallets."""
    from django.test import Client

    from trading.tests.factories import MarketFactory

    market = MarketFactory()
    link(api_alice, alice, wallet)
    page = Client()
    page.force_login(alice)
    r = page.get(f"/trade/{market.symbol}/?mode=PAPER")
    assert r.status_code == 200 and r.context["config"]["linkedWallets"] == [wallet.address]
    anonymous = Client().get(f"/trade/{market.symbol}/?mode=PAPER")
    assert anonymous.context["config"]["linkedWallets"] == []


def test_challenge_without_address_still_binds_nonce_and_signer(api_alice, alice, wallet):
    body = challenge(api_alice, alice)
    assert body["message"].split("\n")[1] == ""  # no account line
    r = answer(api_alice, alice, wallet, body, address=wallet.address.lower())
    assert r.status_code == 201 and r.json()["address"] == wallet.address


def test_replayed_nonce_is_refused(api_alice, alice, wallet):
    body = challenge(api_alice, alice, wallet.address)
    assert answer(api_alice, alice, wallet, body).status_code == 201
    r = answer(api_alice, alice, wallet, body)
    assert r.status_code == 400 and code(r) == "NONCE_USED"


def test_expired_nonce_is_refused(api_alice, alice, wallet):
    body = challenge(api_alice, alice, wallet.address)
    WalletChallenge.objects.filter(nonce=body["nonce"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    r = answer(api_alice, alice, wallet, body)
    assert r.status_code == 400 and code(r) == "NONCE_EXPIRED"
    assert not LinkedWallet.objects.exists()


def test_foreign_nonce_is_refused_and_stays_usable_by_its_owner(
    api_alice, alice, api_bob, bob, wallet
):
    bobs = challenge(api_bob, bob, wallet.address)
    r = answer(api_alice, alice, wallet, bobs)
    assert r.status_code == 400 and code(r) == "NONCE_INVALID"
    assert answer(api_bob, bob, wallet, bobs).status_code == 201


def test_altered_message_is_refused(api_alice, alice, wallet):
    body = challenge(api_alice, alice, wallet.address)
    for altered in (
        body["message"].replace("testserver", "evil.example"),
        body["message"].replace("Chain ID: 1", "Chain ID: 5"),
        body["message"] + "\nResources:\n- https://evil.example",
    ):
        r = answer(api_alice, alice, wallet, body, message=altered)
        assert r.status_code == 400 and code(r) == "SIGNATURE_MISMATCH"
    assert not LinkedWallet.objects.exists()
    # Nothing was consumed by the refusals: the honest answer still works.
    assert answer(api_alice, alice, wallet, body).status_code == 201


def test_wrong_signer_is_refused(api_alice, alice, wallet, other_wallet):
    body = challenge(api_alice, alice, wallet.address)
    r = answer(api_alice, alice, wallet, body, signer=other_wallet)
    assert r.status_code == 400 and code(r) == "SIGNATURE_MISMATCH"


def test_challenge_bound_to_one_address_refuses_another(api_alice, alice, wallet, other_wallet):
    body = challenge(api_alice, alice, wallet.address)
    r = answer(api_alice, alice, other_wallet, body)
    assert r.status_code == 400 and code(r) == "ADDRESS_MISMATCH"


def test_address_linked_elsewhere_is_refused(api_alice, alice, api_bob, bob, wallet):
    assert link(api_bob, bob, wallet).status_code == 201
    body = challenge(api_alice, alice)
    r = answer(api_alice, alice, wallet, body, address=wallet.address.upper().replace("0X", "0x"))
    assert r.status_code == 409 and code(r) == "WALLET_LINKED_ELSEWHERE"
    assert LinkedWallet.objects.get().trader == bob
    # The refusal rolled the nonce claim back.
    assert WalletChallenge.objects.get(nonce=body["nonce"]).used_at is None


def test_addresses_are_unique_whatever_the_case(alice, bob, wallet):
    LinkedWallet.objects.create(trader=bob, address=wallet.address)
    with pytest.raises(IntegrityError), transaction.atomic():
        LinkedWallet.objects.create(trader=alice, address=wallet.address.lower())


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("signature", "0x1234", "INVALID_SIGNATURE"),
        ("signature", "0x" + "00" * 65, "INVALID_SIGNATURE"),
        ("address", "0x1234", "INVALID_ADDRESS"),
        ("address", "not an address", "INVALID_ADDRESS"),
    ],
)
def test_malformed_answers(api_alice, alice, wallet, field, value, expected):
    body = challenge(api_alice, alice)
    data = {"address": wallet.address, "signature": sign(wallet, body["message"])}
    data["nonce"] = body["nonce"]
    data[field] = value
    r = api_alice.post(link_path(alice), data, format="json")
    assert r.status_code == 400 and code(r) == expected and r.json()["error"]["field"] == field


def test_bad_checksum_is_an_invalid_address(api_alice, alice, wallet):
    flipped = wallet.address[:-1] + (
        wallet.address[-1].lower() if wallet.address[-1].isupper() else wallet.address[-1].upper()
    )
    if flipped[-1].isdigit():
        pytest.skip("last character is a digit")
    r = api_alice.get(link_path(alice), {"address": flipped})
    assert r.status_code == 400 and code(r) == "INVALID_ADDRESS"


def test_another_traders_path_is_not_found(api_alice, bob, wallet):
    assert api_alice.get(link_path(bob)).status_code == 404
    r = api_alice.post(link_path(bob), {"address": wallet.address, "signature": "0x", "nonce": "x"})
    assert r.status_code == 404


def test_unlink_and_link_again(api_alice, alice, api_bob, bob, wallet):
    link(api_alice, alice, wallet)
    r = api_alice.delete(f"{link_path(alice)}/{wallet.address.lower()}")
    assert r.status_code == 200 and r.json()["address"] == wallet.address
    assert api_alice.get("/api/v1/me").json()["linkedWallets"] == []
    assert api_alice.delete(f"{link_path(alice)}/{wallet.address}").status_code == 404
    # Unlinked, the address is free for anyone who proves it, and the history stays.
    assert link(api_bob, bob, wallet).status_code == 201
    assert LinkedWallet.objects.count() == 2


def test_challenge_and_answer_are_csrf_protected_for_sessions(alice, wallet):
    c = APIClient(enforce_csrf_checks=True)
    c.force_login(alice)
    r = c.get(link_path(alice), {"address": wallet.address})
    assert r.status_code == 403 and code(r) == "FORBIDDEN"
    token = get_token(RequestFactory().get("/"))
    c.cookies["csrftoken"] = token
    r = c.get(link_path(alice), {"address": wallet.address}, HTTP_X_CSRFTOKEN=token)
    assert r.status_code == 200
    body = r.json()
    data = {"address": wallet.address, "signature": sign(wallet, body["message"])}
    data["nonce"] = body["nonce"]
    assert c.post(link_path(alice), data, format="json").status_code == 403
    r = c.post(link_path(alice), data, format="json", HTTP_X_CSRFTOKEN=token)
    assert r.status_code == 201


def test_token_clients_need_no_csrf(alice, wallet):
    c = client_for(alice)
    c.handler.enforce_csrf_checks = True
    assert link(c, alice, wallet).status_code == 201


def test_fresh_keys_from_eth_account_link_too(api_alice, alice):
    for _ in range(3):
        assert link(api_alice, alice, Account.create()).status_code == 201
    assert len(api_alice.get("/api/v1/me").json()["linkedWallets"]) == 3
