"""Bad input: every refusal is a 4xx JSON error in the contract's shape (or a WebSocket
error message / close), never a 500, and nothing in the database changes.

Covers decimals at and past the limits (tick and lot precision, the 38/12 digits of the
database fields, the order-value bound), negative / zero / NaN / Infinity / 1e999 /
huge numbers, wrong JSON types, unknown and missing fields, non-JSON, oversize and
deeply nested bodies, on every write endpoint; then oversize and malformed frames on the
WebSocket.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import ApiKey, LinkedWallet, Transfer, User, WalletChallenge
from accounts.services import token_for
from ledger.models import Balance, LedgerEntry
from realtime.models import WsTicket
from realtime.tests import conftest as realtime_conftest
from trading.models import Fill, IdempotencyRecord, Market, Order, Position, Trade
from trading.orders.place import order_place
from trading.tests.factories import MarketFactory, UserFactory, fund, spot_market

CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
WALLET = to_checksum_address("0x" + "5e" * 20)
ORDER = {
    "market": "BTC-PERP",
    "mode": "PAPER",
    "side": "BUY",
    "type": "LIMIT",
    "price": "60000",
    "qty": "0.01",
}


@pytest.fixture(autouse=True)
def _generous_throttles(settings):
    settings.THROTTLE_RATES = {k: "100000/hour" for k in settings.THROTTLE_RATES}


def snapshot() -> tuple:
    """Row counts and the money of every table a request could write."""
    return (
        Order.objects.count(),
        list(Order.objects.order_by("id").values_list("status", "filled_qty", "reserved")),
        Fill.objects.count(),
        Trade.objects.count(),
        list(Position.objects.order_by("id").values_list("size", "leverage")),
        LedgerEntry.objects.count(),
        list(Balance.objects.order_by("id").values_list("total", "locked")),
        list(Transfer.objects.order_by("id").values_list("status", "amount")),
        list(ApiKey.objects.order_by("id").values_list("id", "revoked_at")),
        list(LinkedWallet.objects.order_by("id").values_list("id", "unlinked_at")),
        WalletChallenge.objects.count(),
        IdempotencyRecord.objects.count(),
        WsTicket.objects.count(),
        User.objects.count(),
        list(Market.objects.order_by("id").values_list("status", "mark_price")),
    )


class Trader:
    def __init__(self, user: User) -> None:
        self.user = user
        self.auth = f"Token {token_for(user)}"
        self.client = Client()

    def send(self, method: str, path: str, body: Any, content_type: str = "application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body)
        return self.client.generic(
            method, path, data, content_type=content_type, HTTP_AUTHORIZATION=self.auth
        )


@pytest.fixture
def trader(db) -> Trader:
    MarketFactory()
    spot_market()
    user = UserFactory(username="fuzzer")
    for mode in ("REAL", "PAPER"):
        fund(user, "100000", mode=mode)
    LinkedWallet.objects.create(trader=user, address=WALLET)
    order_place(
        trader=user,
        market="BTC-PERP",
        mode="PAPER",
        side="SELL",
        type="LIMIT",
        price=Decimal("70000"),
        qty=Decimal("0.01"),
    )
    return Trader(user)


def assert_refused(resp, label: str) -> str:
    assert 400 <= resp.status_code < 500, (label, resp.status_code, resp.content[:300])
    assert resp["Content-Type"].startswith("application/json"), (label, resp["Content-Type"])
    err = resp.json()["error"]
    assert CODE.match(err["code"]) and isinstance(err["message"], str), (label, err)
    assert set(err) <= {"code", "message", "field", "retryAfter"}, (label, err)
    return err["code"]


def order(**kw: Any) -> dict:
    body = dict(ORDER)
    for k, v in kw.items():
        if v is ...:
            body.pop(k)
        else:
            body[k] = v
    return body


HUGE = "9" * 26
FIELD_CASES: list[tuple[str, Any, str | None]] = [
    # (field, value, expected code)
    ("price", "60000.25", "INVALID_PRICE"),  # off the 0.5 tick
    ("price", "0.000000000001", "INVALID_PRICE"),
    ("price", "0.0000000000001", "INVALID_PRICE"),  # 13 places: past the field
    ("price", "0", "INVALID_PRICE"),
    ("price", "-60000", "INVALID_PRICE"),
    ("price", "NaN", "INVALID_PRICE"),
    ("price", "Infinity", "INVALID_PRICE"),
    ("price", "-Infinity", "INVALID_PRICE"),
    ("price", "1e999", "INVALID_PRICE"),
    ("price", "1e-999", "INVALID_PRICE"),
    ("price", HUGE, "INVALID_PRICE"),
    ("price", HUGE + ".5", "INVALID_PRICE"),
    ("price", "1" * 39, "INVALID_PRICE"),
    ("price", "1000000000000000.5", "INVALID_PRICE"),  # past 1e15
    ("price", "0x10", "INVALID_PRICE"),
    ("price", "", "INVALID_PRICE"),
    ("price", " ", "INVALID_PRICE"),
    ("price", True, "INVALID_PRICE"),
    ("price", [1], "INVALID_PRICE"),
    ("price", {"v": 1}, "INVALID_PRICE"),
    ("qty", "0.0001", "INVALID_QTY"),  # off the 0.001 lot
    ("qty", "0", "INVALID_QTY"),
    ("qty", "-0.01", "INVALID_QTY"),
    ("qty", "NaN", "INVALID_QTY"),
    ("qty", "sNaN", "INVALID_QTY"),
    ("qty", "Infinity", "INVALID_QTY"),
    ("qty", "1e999", "INVALID_QTY"),
    ("qty", "1E+25", "INVALID_QTY"),
    ("qty", HUGE, "INVALID_QTY"),
    ("qty", "1" * 40, "INVALID_QTY"),
    ("qty", "0.0000000000001", "INVALID_QTY"),
    ("qty", "1000000000000", "INVALID_QTY"),  # price * qty past 1e15
    ("qty", None, "INVALID_QTY"),
    ("qty", False, "INVALID_QTY"),
    ("qty", ["0.01"], "INVALID_QTY"),
    ("qty", ..., "MISSING_FIELD"),
    ("market", ..., "MISSING_FIELD"),
    ("mode", ..., "MISSING_FIELD"),
    ("side", ..., "MISSING_FIELD"),
    ("type", ..., "MISSING_FIELD"),
    ("market", 5, None),
    ("market", ["BTC-PERP"], "INVALID_MARKET"),
    ("market", "NOPE-PERP", "UNKNOWN_MARKET"),
    ("market", "X" * 41, "INVALID_MARKET"),
    ("market", "BTC\x00PERP", "INVALID_MARKET"),
    ("mode", "real", "INVALID_MODE"),
    ("mode", "BOTH", "INVALID_MODE"),
    ("mode", None, "INVALID_MODE"),
    ("side", "buy", "INVALID_SIDE"),
    ("side", 1, "INVALID_SIDE"),
    ("type", "STOP", "INVALID_TYPE"),
    ("timeInForce", "GTD", "INVALID_TIME_IN_FORCE"),
    ("reduceOnly", "maybe", "INVALID_REDUCE_ONLY"),
    ("reduceOnly", [], "INVALID_REDUCE_ONLY"),
    ("clientOrderId", "has space", "INVALID_CLIENT_ORDER_ID"),
    ("clientOrderId", "x" * 65, "INVALID_CLIENT_ORDER_ID"),
    ("clientOrderId", {"a": 1}, "INVALID_CLIENT_ORDER_ID"),
    ("prcie", "60000", "UNKNOWN_FIELD"),
    ("extra", None, "UNKNOWN_FIELD"),
]


def cases(trader: Trader) -> list[tuple[str, str, Any, str | None]]:
    """(method, path, body, expected code or None for any 4xx) for every write endpoint."""
    tid = trader.user.trader_id
    out: list[tuple[str, str, Any, str | None]] = []
    for f, v, code in FIELD_CASES:
        out.append(("POST", "/api/v1/trade", order(**{f: v}), code))
        # A spot book has other grids: 0.0001 tick, 0.1 lot.
        if f != "market":
            out.append(("POST", "/api/v1/trade", order(**{"market": "CXPT-USDC", f: v}), None))
    out += [
        ("POST", "/api/v1/trade", order(type="MARKET", price=None, qty=HUGE), "INVALID_QTY"),
        ("POST", "/api/v1/trade", order(type="MARKET", price="60000"), "INVALID_PRICE"),
        ("POST", "/api/v1/trade", order(price=None), "INVALID_PRICE"),
        ("POST", "/api/v1/trade", order(side="SELL", price=HUGE + ".5", qty="0.001"), None),
        ("POST", "/api/v1/trade", order(price="0.5", qty="99999999999999"), "INSUFFICIENT_MARGIN"),
        (
            "POST",
            "/api/v1/trade",
            order(market="CXPT-USDC", price="0.0001", qty="99999999999999999999"),
            "INVALID_QTY",
        ),
        ("POST", "/api/v1/trade", order(qty="100"), "INSUFFICIENT_MARGIN"),
        ("POST", "/api/v1/trade", order(qty="0.001", price="5000"), "MIN_NOTIONAL"),
        ("POST", "/api/v1/trade", [ORDER], "BAD_REQUEST"),
        ("POST", "/api/v1/trade", "BTC-PERP", "BAD_REQUEST"),
        ("POST", "/api/v1/trade", 42, "BAD_REQUEST"),
        ("POST", "/api/v1/trade", None, "BAD_REQUEST"),
        ("POST", "/api/v1/trade/batch", {}, "MISSING_FIELD"),
        ("POST", "/api/v1/trade/batch", {"orders": []}, "INVALID_ORDERS"),
        ("POST", "/api/v1/trade/batch", {"orders": [ORDER] * 21}, "INVALID_ORDERS"),
        ("POST", "/api/v1/trade/batch", {"orders": ORDER}, "INVALID_ORDERS"),
        ("POST", "/api/v1/trade/batch", {"orders": [1, "x"]}, "INVALID_ORDERS"),
        ("POST", "/api/v1/trade/batch", {"orders": [ORDER], "atomic": True}, "UNKNOWN_FIELD"),
        ("DELETE", "/api/v1/orders/999999999999999999999", None, "NOT_FOUND"),
        ("DELETE", "/api/v1/orders/-1", None, "NOT_FOUND"),
        ("DELETE", "/api/v1/orders/abc", None, "NOT_FOUND"),
        ("DELETE", "/api/v1/orders?mode=SIDEWAYS", None, "INVALID_MODE"),
        ("DELETE", "/api/v1/orders?mode=%00", None, "BAD_REQUEST"),
        ("GET", "/api/v1/orders?market=%00", None, "BAD_REQUEST"),
        ("GET", "/api/v1/markets/%00/depth", None, "BAD_REQUEST"),
        ("GET", "/api/v1/markets/BTC%00PERP", None, "BAD_REQUEST"),
        ("GET", "/api/v1/fills?limit=1e3", None, "INVALID_LIMIT"),
        ("GET", "/api/v1/fills?limit=-1", None, "INVALID_LIMIT"),
        ("GET", "/api/v1/fills?nextToken=%F0%9F%92%A9", None, "INVALID_NEXT_TOKEN"),
        ("GET", "/api/v1/markets/BTC-PERP/depth?levels=99999999999999999999", None, None),
        ("GET", "/api/v1/metrics?market=BTC-PERP&interval=7m", None, "INVALID_INTERVAL"),
        ("GET", "/api/v1/metrics?market=BTC-PERP&from=1e99", None, "INVALID_FROM"),
    ]
    lev = "/api/v1/markets/BTC-PERP/leverage"
    for value in ("0", "-1", "0.99", "21", "1e999", "NaN", "Infinity", "1.001", "9999.99", True):
        out.append(("POST", lev, {"mode": "PAPER", "leverage": value}, "INVALID_LEVERAGE"))
    out += [
        ("POST", lev, {"mode": "PAPER"}, "MISSING_FIELD"),
        ("POST", lev, {"mode": "PAPER", "leverage": "5", "x": 1}, "UNKNOWN_FIELD"),
        ("POST", lev, {"mode": "NOPE", "leverage": "5"}, "INVALID_MODE"),
        ("POST", "/api/v1/markets/NOPE/leverage", {"mode": "PAPER", "leverage": "5"}, None),
        ("POST", "/api/v1/markets/CXPT-USDC/leverage", {"mode": "PAPER", "leverage": "5"}, None),
        ("POST", "/api/v1/positions/BTC-PERP/close", {"mode": "PAPER"}, "NO_POSITION"),
        ("POST", "/api/v1/positions/BTC-PERP/close", {}, "MISSING_FIELD"),
        ("POST", "/api/v1/positions/BTC-PERP/close", {"mode": 1}, "INVALID_MODE"),
    ]
    tx = "0x" + "ab" * 32
    dep = "/api/v1/vault/deposit"
    for amount, code in [
        ("0", "INVALID_AMOUNT"),
        ("-1", "INVALID_AMOUNT"),
        ("NaN", "INVALID_AMOUNT"),
        ("Infinity", "INVALID_AMOUNT"),
        ("1e999", "INVALID_AMOUNT"),
        (HUGE, "INVALID_AMOUNT"),
        ("1000000000000000.000000000001", "INVALID_AMOUNT"),
        ("0.0000000000001", "INVALID_AMOUNT"),
        ([1], "INVALID_AMOUNT"),
        (None, "INVALID_AMOUNT"),
    ]:
        out.append(("POST", dep, {"asset": "USDC", "amount": amount, "txHash": tx}, code))
        out.append(
            (
                "POST",
                "/api/v1/vault/withdraw",
                {"asset": "USDC", "amount": amount, "address": WALLET},
                code,
            )
        )
    out += [
        ("POST", dep, {"asset": "DOGE", "amount": "1", "txHash": tx}, "INVALID_ASSET"),
        ("POST", dep, {"asset": "USDC", "amount": "1", "txHash": "0x12"}, "INVALID_TX_HASH"),
        ("POST", dep, {"asset": "USDC", "amount": "1"}, "MISSING_FIELD"),
        ("POST", dep, {"asset": "USDC", "amount": "1", "txHash": tx, "memo": ""}, None),
        (
            "POST",
            "/api/v1/vault/withdraw",
            {"asset": "USDC", "amount": "100001", "address": WALLET},
            "INSUFFICIENT_BALANCE",
        ),
        (
            "POST",
            "/api/v1/vault/withdraw",
            {"asset": "USDC", "amount": "1", "address": "0x" + "12" * 20},
            "WALLET_NOT_LINKED",
        ),
        (
            "POST",
            "/api/v1/vault/withdraw",
            {"asset": "USDC", "amount": "1", "address": "not-an-address"},
            "INVALID_ADDRESS",
        ),
    ]
    link = f"/api/v1/user/{tid}/link-wallet"
    good_sig = "0x" + "11" * 65
    out += [
        ("POST", link, {"address": WALLET, "signature": good_sig}, "MISSING_FIELD"),
        ("POST", link, {"address": 5, "signature": good_sig, "nonce": "n"}, "INVALID_ADDRESS"),
        ("POST", link, {"address": "0x12", "signature": good_sig, "nonce": "n"}, None),
        ("POST", link, {"address": WALLET, "signature": "0x1", "nonce": "n"}, None),
        ("POST", link, {"address": WALLET, "signature": good_sig, "nonce": "x" * 65}, None),
        ("POST", link, {"address": WALLET, "signature": good_sig, "nonce": "n", "z": 1}, None),
        ("POST", link, {"address": "\x00", "signature": "\x00", "nonce": "\x00"}, None),
        ("DELETE", f"{link}/not-an-address", None, "INVALID_ADDRESS"),
        ("DELETE", f"{link}/{'0x' + '12' * 20}", None, None),
        ("GET", f"{link}?address=" + "z" * 500, None, "INVALID_ADDRESS"),
        ("POST", "/api/v1/user/not-a-uuid/link-wallet", {}, "NOT_FOUND"),
    ]
    keys = "/api/v1/api-keys"
    out += [
        ("POST", keys, {"name": "x", "scopes": []}, "INVALID_SCOPES"),
        ("POST", keys, {"name": "x", "scopes": "read"}, "INVALID_SCOPES"),
        ("POST", keys, {"name": "x", "scopes": ["admin"]}, "INVALID_SCOPES"),
        ("POST", keys, {"name": "x", "scopes": [1]}, "INVALID_SCOPES"),
        ("POST", keys, {"name": "x", "scopes": ["read"] * 4}, "INVALID_SCOPES"),
        ("POST", keys, {"name": "x" * 65, "scopes": ["read"]}, "INVALID_NAME"),
        ("POST", keys, {"name": None, "scopes": ["read"]}, "INVALID_NAME"),
        ("POST", keys, {"name": "x"}, "MISSING_FIELD"),
        ("POST", keys, {"scopes": ["read"], "admin": True}, "UNKNOWN_FIELD"),
        ("DELETE", f"{keys}/0", None, "NOT_FOUND"),
        ("DELETE", f"{keys}/99999999999999999999999", None, "NOT_FOUND"),
        ("POST", "/api/v1/paper/faucet", {"amount": "1000000"}, "UNKNOWN_FIELD"),
        ("POST", "/api/v1/paper/faucet", [1], "BAD_REQUEST"),
        ("POST", "/api/v1/paper/reset", {"keep": True}, "UNKNOWN_FIELD"),
        ("POST", "/api/v1/auth/signup", {"username": "u"}, "MISSING_FIELD"),
        ("POST", "/api/v1/auth/signup", {"username": "a" * 151, "password": "x" * 12}, None),
        ("POST", "/api/v1/auth/signup", {"username": "\x00", "password": "x" * 12}, None),
        ("POST", "/api/v1/auth/signup", {"username": ["u"], "password": "x" * 12}, None),
        ("POST", "/api/v1/auth/signup", {"username": "u", "password": "short"}, None),
        ("POST", "/api/v1/auth/token", {"username": "fuzzer", "password": 1}, None),
        ("POST", "/api/v1/auth/token", {"username": "fuzzer"}, "MISSING_FIELD"),
    ]
    return out


def test_bad_json_bodies_of_every_write_endpoint(trader: Trader) -> None:
    before = snapshot()
    refused = 0
    for method, path, body, code in cases(trader):
        resp = trader.send(method, path, body)
        got = assert_refused(resp, f"{method} {path} {body!r:.120}")
        if code is not None:
            assert got == code, (method, path, body, resp.json())
        refused += 1
    assert snapshot() == before
    print(f"bad JSON bodies: {refused} refused")
    assert refused > 200


RAW_BODIES: list[tuple[bytes, str, str]] = [
    (b"{", "application/json", "BAD_JSON"),
    (b"{'market': 'BTC-PERP'}", "application/json", "BAD_JSON"),
    (b'{"qty": NaN}', "application/json", "BAD_JSON"),
    (b'{"qty": Infinity}', "application/json", "BAD_JSON"),
    (b'{"qty": -Infinity}', "application/json", "BAD_JSON"),
    (b"\xff\xfe\x00", "application/json", "BAD_JSON"),
    (b'{"a": 1' + b"1" * 5000 + b"}", "application/json", "BAD_JSON"),
    (b"[" * 33 + b"]" * 33, "application/json", "BAD_JSON"),
    (b"[" * 200_000, "application/json", "BAD_JSON"),
    (b'{"x":' * 40_000, "application/json", "BAD_JSON"),
    (b"market=BTC-PERP&qty=1", "application/x-www-form-urlencoded", "UNSUPPORTED_MEDIA_TYPE"),
    (b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x", "UNSUPPORTED_MEDIA_TYPE"),
    (b"<order/>", "text/xml", "UNSUPPORTED_MEDIA_TYPE"),
    (b"qty=1", "text/plain", "UNSUPPORTED_MEDIA_TYPE"),
    (b'{"a":"' + b"x" * 300_000 + b'"}', "application/json", "PAYLOAD_TOO_LARGE"),
    (b" " * 300_000, "application/json", "PAYLOAD_TOO_LARGE"),
]

WRITE_PATHS = [
    ("POST", "/api/v1/trade"),
    ("POST", "/api/v1/trade/batch"),
    ("POST", "/api/v1/markets/BTC-PERP/leverage"),
    ("POST", "/api/v1/positions/BTC-PERP/close"),
    ("POST", "/api/v1/vault/deposit"),
    ("POST", "/api/v1/vault/withdraw"),
    ("POST", "/api/v1/api-keys"),
    ("POST", "/api/v1/paper/faucet"),
    ("POST", "/api/v1/auth/signup"),
    ("POST", "/api/v1/auth/token"),
]
# Endpoints that take no body: they never parse one, but the guard in front of every
# view still refuses oversize and deeply nested bodies.
BODILESS_PATHS = [
    ("POST", "/api/v1/ws-ticket"),
    ("DELETE", "/api/v1/orders"),
    ("DELETE", "/api/v1/orders/1"),
    ("DELETE", "/api/v1/api-keys/1"),
]


def test_non_json_nested_and_oversize_bodies(trader: Trader) -> None:
    before = snapshot()
    sent = 0
    for method, path in [
        *WRITE_PATHS,
        ("POST", f"/api/v1/user/{trader.user.trader_id}/link-wallet"),
    ]:
        for raw, content_type, code in RAW_BODIES:
            resp = trader.send(method, path, raw, content_type)
            got = assert_refused(resp, f"{method} {path} {raw[:40]!r}")
            assert got == code, (method, path, raw[:40], resp.json())
            sent += 1
    for method, path in BODILESS_PATHS:
        for raw, content_type, code in RAW_BODIES:
            if code == "PAYLOAD_TOO_LARGE" or raw.startswith((b"[" * 33, b'{"x":{')):
                resp = trader.send(method, path, raw, content_type)
                assert assert_refused(resp, f"{method} {path}") == code
                sent += 1
    assert snapshot() == before
    print(f"raw bodies: {sent} refused")


def test_a_bad_content_length_is_refused(trader: Trader) -> None:
    resp = trader.client.generic(
        "POST",
        "/api/v1/trade",
        json.dumps(ORDER),
        content_type="application/json",
        HTTP_AUTHORIZATION=trader.auth,
        CONTENT_LENGTH="lots",
    )
    assert assert_refused(resp, "content-length") == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/v1/balances?mode=", "INVALID_MODE"),
        ("/api/v1/positions?mode=paper", "INVALID_MODE"),
        ("/api/v1/fills?mode=PAPER&limit=", "INVALID_LIMIT"),
        ("/api/v1/vault/transfers?limit=%205", "INVALID_LIMIT"),
        ("/api/v1/paper/leaderboard?limit=%D9%A5", "INVALID_LIMIT"),
        ("/api/v1/fills?mode=PAPER&limit=5_0", "INVALID_LIMIT"),
    ],
)
def test_query_parameters_take_only_the_values_the_schema_states(
    trader: Trader, path: str, code: str
) -> None:
    """Found by the fuzzer: an empty `mode=` or `limit=` was read as absent (the
    default), and int() took " 5", "5_0" and other scripts' digits."""
    resp = trader.client.get(path, HTTP_AUTHORIZATION=trader.auth)
    assert assert_refused(resp, path) == code


def test_an_api_path_with_a_control_character_gets_the_json_404(trader: Trader) -> None:
    """Found by the fuzzer: a path under /api/ ending in a newline missed the API's
    catch-all (whose pattern stops at a newline) and got Django's HTML page."""
    for method in ("get", "delete"):
        resp = getattr(trader.client, method)(
            "/api/v1/user/G%C2%8E/link-wallet/%C2%A4%0A", HTTP_AUTHORIZATION=trader.auth
        )
        assert resp.status_code == 404
        assert assert_refused(resp, method) == "NOT_FOUND"


def test_limits_are_not_over_strict(trader: Trader) -> None:
    """At the limits, within them: the finest tick and lot, and the largest order value
    the bound lets through, are accepted (refused only for margin)."""
    ok = trader.send("POST", "/api/v1/trade", order(price="60000.5", qty="0.001", side="BUY"))
    assert ok.status_code == 201, ok.content
    at_bound = trader.send(
        "POST", "/api/v1/trade", order(price="60000.5", qty="1000000000", side="BUY")
    )
    assert assert_refused(at_bound, "at bound") == "INSUFFICIENT_MARGIN"
    # A price 15x the mark is a price band's matter before it is margin's.
    far = trader.send("POST", "/api/v1/trade", order(price="1000000", qty="0.001", side="BUY"))
    assert assert_refused(far, "far") == "PRICE_OUT_OF_BAND"
    spot = trader.send(
        "POST", "/api/v1/trade", order(market="CXPT-USDC", price="0.0001", qty="100.1")
    )
    assert spot.status_code in (201, 400), spot.content


decimal_text = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(
        lambda m, e: f"{m}e{e}",
        st.integers(-(10**6), 10**6),
        st.integers(-1100, 1100),
    ),
    st.sampled_from(["1e999", "-1e999", "NaN", "-0", "0E-30", "1_000", "١٢", "0x1p3", " 1 "]),
)
json_value = st.one_of(decimal_text, st.none(), st.booleans(), st.integers(), st.lists(st.none()))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(price=json_value, qty=json_value, market=st.sampled_from(["BTC-PERP", "CXPT-USDC"]))
def test_numeric_edge_cases_never_500_and_never_change_an_unfunded_account(
    broke: Trader, price: Any, qty: Any, market: str
) -> None:
    """An account without funds can place no LIMIT order: whatever the numbers, the
    answer is a 4xx in the contract's shape and nothing is written."""
    before = snapshot()
    for side in ("BUY", "SELL"):
        body = order(market=market, side=side, price=price, qty=qty)
        resp = broke.send("POST", "/api/v1/trade", body)
        assert_refused(resp, repr(body))
    resp = broke.send(
        "POST",
        "/api/v1/vault/withdraw",
        {"asset": "USDC", "amount": qty, "address": WALLET},
    )
    assert_refused(resp, repr(qty))
    assert snapshot() == before
    # Leverage takes 1 to 20: in range it is set (a valid request), else refused.
    resp = broke.send(
        "POST",
        "/api/v1/markets/BTC-PERP/leverage",
        {"mode": "PAPER", "leverage": price},
    )
    assert resp.status_code < 500, (price, resp.content)
    if resp.status_code >= 400:
        assert_refused(resp, repr(price))
        assert snapshot() == before


@pytest.fixture
def broke(trader: Trader) -> Trader:
    user = UserFactory(username="broke")
    LinkedWallet.objects.create(trader=user, address=to_checksum_address("0x" + "6f" * 20))
    return Trader(user)


# -- WebSocket ----------------------------------------------------------------------------

layer = realtime_conftest.layer


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_malformed_and_oversize_websocket_frames(layer) -> None:
    from realtime.tests.conftest import communicator

    async def recv(comm) -> dict:
        out = await comm.receive_output(timeout=3)
        if out["type"] == "websocket.close":
            return {"type": "__closed__", "code": out.get("code")}
        return json.loads(out["text"])

    malformed: list[str | bytes] = [
        "not json",
        " ",
        "null",
        "[1]",
        '"subscribe"',
        "NaN",
        '{"action": NaN}',
        '{"action": 5}',
        '{"action": null}',
        '{"action": ["subscribe"]}',
        '{"action": "subscribe"}',
        '{"action": "subscribe", "channel": 5}',
        '{"action": "subscribe", "channel": ["market.BTC-PERP"]}',
        '{"action": "subscribe", "channel": "market.BTC-PERP", "sinceSeq": "1"}',
        '{"action": "subscribe", "channel": "market.BTC-PERP", "sinceSeq": 1.5}',
        '{"action": "subscribe", "channel": "market.BTC-PERP", "sinceSeq": 1e999}',
        '{"action": "subscribe", "channel": "market.BTC-PERP", "sinceSeq": true}',
        '{"action": "subscribe", "channel": "market.BTC-PERP", "sinceSeq": -1}',
        '{"action": "subscribe", "channel": "' + "x" * 200 + '"}',
        '{"action": "subscribe", "channel": "trader.not-a-uuid"}',
        '{"action": "subscribe", "channel": "market.btc-perp"}',
        '{"action": "subscribe", "channel": "market.BTC-PERP\\u0000"}',
        '{"action": "unsubscribe", "channel": "market.BTC-PERP"}',
        '{"action": "dance"}',
        "[" * 2000 + "]" * 2000,
        '{"a":' * 600 + "1" + "}" * 600,
        b"\xff\xfe\xfd",
        b'{"action": "ping"',
    ]
    comm = communicator()
    assert (await comm.connect())[0]
    for i, frame in enumerate(malformed):
        if i and i % 15 == 0:
            import asyncio

            await asyncio.sleep(1)  # under the 20 messages a second of the rate limit
        if isinstance(frame, bytes):
            await comm.send_to(bytes_data=frame)
        else:
            await comm.send_to(text_data=frame)
        msg = await recv(comm)
        assert msg["type"] == "error", (frame[:60], msg)
        assert msg["code"] in ("BAD_MESSAGE", "UNKNOWN_CHANNEL"), (frame[:60], msg)
    await comm.send_json_to({"action": "ping"})
    assert (await recv(comm))["type"] == "pong"  # still open
    await comm.disconnect()

    for frame in ("x" * 4097, json.dumps({"action": "ping", "pad": "y" * 5000}), b"z" * 70000):
        big = communicator()
        assert (await big.connect())[0]
        if isinstance(frame, bytes):
            await big.send_to(bytes_data=frame)
        else:
            await big.send_to(text_data=frame)
        assert (await recv(big))["code"] == "MESSAGE_TOO_LARGE"
        assert await recv(big) == {"type": "__closed__", "code": 4008}
    print(f"websocket frames: {len(malformed) + 3} refused")
