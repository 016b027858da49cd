"""Authorization matrix: every endpoint of the URLconf under /api/v1/, /account/, /trade/
and /admin/ x {anonymous, trader A, trader B, staff} x {API key, session} x {REAL, PAPER}.

Trader A owns orders, fills, positions, balances, ledger rows, transfers, an API key and
a linked wallet in both modes. No one but A may read or change them: every cell checks
the response and, for every principal but A, that A's rows are exactly as before. Non-staff
get no admin page and no admin action. Each cell runs in a savepoint that is rolled back,
so one cell's effects never feed the next.

The WebSocket half: a foreign Origin is refused, `trader.*` channels are their owner's
only, and a socket whose session ends (logout, deleted session, revoked API key) stops
receiving private events and is closed with 4008.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from eth_utils import to_checksum_address

from accounts.models import ApiKey, LinkedWallet, Transfer, User, WalletChallenge
from accounts.services import token_for
from accounts.services.api_keys import api_key_create
from accounts.services.vault import deposit_record, withdrawal_request
from ledger.models import Balance, LedgerEntry
from realtime.tests import conftest as realtime_conftest
from trading.models import Fill, Market, Order, Position
from trading.orders.place import order_place
from trading.services.books import engine_cache_clear
from trading.tests.factories import MarketFactory, UserFactory, fund

PREFIXES = ("api/v1/", "account/", "trade/", "admin/")
MODES = ("REAL", "PAPER")
A_WALLET = to_checksum_address("0x" + "7a" * 20)
A_TX = "0x" + "ab" * 32
PASSWORD = "pw-for-tests-1"


# -- the URLconf --------------------------------------------------------------------------


def url_routes() -> list[tuple[str, Any]]:
    """(full route, callback) of every endpoint of the URLconf."""
    found: list[tuple[str, Any]] = []

    def walk(patterns: list, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                found.append((prefix + str(p.pattern), p.callback))

    walk(get_resolver().url_patterns, "")
    return found


def in_scope(route: str) -> bool:
    return route.lstrip("^").startswith(PREFIXES)


def view_methods(callback: Any) -> set[str]:
    """The HTTP methods a class-based view answers (upper case)."""
    cls = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if cls is None:
        return set()
    return {m.upper() for m in cls.http_method_names if m not in ("options", "head")} & {
        m.upper() for m in dir(cls) if m in ("get", "post", "put", "patch", "delete")
    }


# -- the world ----------------------------------------------------------------------------


@dataclass
class World:
    a: User
    b: User
    c: User
    staff: User
    market: Market
    tokens: dict[str, str]
    orders: dict[str, int]  # A's resting order per mode
    fills: dict[str, list[int]]
    api_key_id: int
    api_key_prefix: str
    deposit_id: int
    withdrawal_id: int
    sessions: dict[str, Client] = field(default_factory=dict)

    def markers(self) -> list[str]:
        """Strings only A's private data contains."""
        return [
            str(self.a.trader_id),
            self.a.username,
            A_WALLET,
            A_WALLET.lower(),
            A_TX,
            self.api_key_prefix,
            *(f"a-secret-{m}" for m in MODES),
        ]


@pytest.fixture(autouse=True)
def _generous_throttles(settings):
    # The matrix sends a few dozen signups and faucet calls; throttles have tests of
    # their own.
    settings.THROTTLE_RATES = {k: "100000/hour" for k in settings.THROTTLE_RATES}


def build_world() -> World:
    market = MarketFactory()
    a = UserFactory(username="alice-authz")
    b = UserFactory(username="bob-authz")
    c = UserFactory(username="carol-authz")
    staff = UserFactory(username="staff-authz", is_staff=True, is_superuser=True)
    for u in (a, b, c, staff):
        u.save()  # the factory sets the password without saving it; sessions hash it
        for mode in MODES:
            fund(u, "100000", mode=mode)
    orders, fills = {}, {}
    for mode in MODES:
        order_place(
            trader=c,
            market="BTC-PERP",
            mode=mode,
            side="SELL",
            type="LIMIT",
            price=Decimal("64000"),
            qty=Decimal("0.01"),
        )
        order_place(
            trader=a,
            market="BTC-PERP",
            mode=mode,
            side="BUY",
            type="LIMIT",
            price=Decimal("64000"),
            qty=Decimal("0.01"),
        )
        resting, _ = order_place(
            trader=a,
            market="BTC-PERP",
            mode=mode,
            side="SELL",
            type="LIMIT",
            price=Decimal("70000"),
            qty=Decimal("0.005"),
            client_order_id=f"a-secret-{mode}",
        )
        orders[mode] = resting["id"]
        fills[mode] = list(Fill.objects.filter(trader=a, mode=mode).values_list("id", flat=True))
        assert fills[mode]
    LinkedWallet.objects.create(trader=a, address=A_WALLET)
    deposit, _ = deposit_record(trader=a, asset="USDC", amount=Decimal("5"), tx_hash=A_TX)
    withdrawal = withdrawal_request(trader=a, asset="USDC", amount=Decimal("3"), address=A_WALLET)
    key, _ = api_key_create(trader=a, name="a-bot", scopes=["read"])
    tokens = {"A": token_for(a), "B": token_for(b), "staff": token_for(staff)}
    world = World(
        a=a,
        b=b,
        c=c,
        staff=staff,
        market=market,
        tokens=tokens,
        orders=orders,
        fills=fills,
        api_key_id=key.pk,
        api_key_prefix=key.prefix,
        deposit_id=deposit.pk,
        withdrawal_id=withdrawal.pk,
    )
    for name, user in (("A", a), ("B", b), ("staff", staff)):
        client = Client()
        client.force_login(user)
        world.sessions[name] = client
    return world


@pytest.fixture
def world(db) -> World:
    return build_world()


def a_state(w: World) -> tuple:
    """Everything of A's that no one else may change, and the markets' state."""
    a = w.a
    return (
        list(
            Order.objects.filter(trader=a)
            .order_by("id")
            .values_list("id", "status", "filled_qty", "reserved", "price", "qty")
        ),
        sorted(Fill.objects.filter(trader=a).values_list("id", flat=True)),
        list(
            Position.objects.filter(trader=a)
            .order_by("id")
            .values_list("id", "size", "leverage", "open_notional")
        ),
        list(
            Balance.objects.filter(trader=a)
            .order_by("id")
            .values_list("asset", "mode", "total", "locked")
        ),
        LedgerEntry.objects.filter(trader=a).count(),
        list(
            Transfer.objects.filter(trader=a)
            .order_by("id")
            .values_list("id", "status", "amount", "tx_hash")
        ),
        list(ApiKey.objects.filter(trader=a).order_by("id").values_list("id", "revoked_at")),
        list(LinkedWallet.objects.filter(trader=a).values_list("id", "unlinked_at")),
        WalletChallenge.objects.filter(trader=a).count(),
        User.objects.filter(pk=a.pk)
        .values_list("is_active", "is_staff", "password", "last_faucet_at", "paper_points_from")
        .first(),
        list(Market.objects.order_by("id").values_list("id", "status")),
    )


# -- making one request -------------------------------------------------------------------

PRINCIPALS = ("anon", "A", "B", "staff")


def call(w: World, who: str, via: str, method: str, path: str, body: Any = None):
    """One request as `who` ("anon", "A", "B", "staff") by `via` ("token"/"session")."""
    extra: dict[str, str] = {}
    if who == "anon":
        client = Client()
    elif via == "session":
        client = w.sessions[who]
    else:
        client = Client()
        extra["HTTP_AUTHORIZATION"] = f"Token {w.tokens[who]}"
    if method == "GET":
        return client.get(path, body or {}, **extra)
    if body is not None and not isinstance(body, dict | list):
        return client.generic(method, path, body, **extra)
    data = json.dumps(body) if body is not None else ""
    return client.generic(method, path, data, content_type="application/json", **extra)


class _Rollback(Exception):
    pass


def in_savepoint(fn: Callable[[], None]) -> None:
    try:
        with transaction.atomic():
            fn()
            raise _Rollback
    except _Rollback:
        pass
    finally:
        engine_cache_clear()


def error_code(resp) -> str | None:
    try:
        return resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


# -- the matrix ---------------------------------------------------------------------------

OK = frozenset({200, 201})


@dataclass(frozen=True)
class Op:
    """One method of one endpoint.

    kind: "public" (anyone), "self" (a signed-in trader, on their own account only),
    "owned" (the path names A's object: A only, everyone else 404).
    """

    method: str
    kind: str
    path: Callable[[World, str, str], str]
    body: Callable[[World, str, str], Any] | None = None
    ok: frozenset[int] = OK  # what A (and, for "self"/"public", others) receive
    other_ok: frozenset[int] | None = None  # B and staff on "self", if not `ok`
    pages: bool = False  # a server-rendered page: session only, 302 to login for anonymous
    ids: Callable[[World, str], set[int]] | None = None  # A's ids a listing must not show


def p(path: str) -> Callable[[World, str, str], str]:
    return lambda w, who, mode: path.format(mode=mode)


def order_body(w: World, who: str, mode: str) -> dict:
    return {
        "market": "BTC-PERP",
        "mode": mode,
        "side": "BUY",
        "type": "LIMIT",
        "price": "1000",
        "qty": "0.01",
    }


def a_order_ids(w: World, mode: str) -> set[int]:
    return set(Order.objects.filter(trader=w.a).values_list("id", flat=True))


def a_fill_ids(w: World, mode: str) -> set[int]:
    return set(Fill.objects.filter(trader=w.a).values_list("id", flat=True))


def a_transfer_ids(w: World, mode: str) -> set[int]:
    return {w.deposit_id, w.withdrawal_id}


def a_key_ids(w: World, mode: str) -> set[int]:
    return set(ApiKey.objects.filter(trader=w.a).values_list("id", flat=True))


def wallet_path(w: World, who: str, mode: str) -> str:
    return f"/api/v1/user/{w.a.trader_id}/link-wallet"


MATRIX: dict[str, list[Op]] = {
    "api/v1/schema/": [Op("GET", "public", p("/api/v1/schema/"))],
    "api/v1/docs/": [Op("GET", "public", p("/api/v1/docs/"))],
    "api/v1/ws-ticket": [Op("POST", "self", p("/api/v1/ws-ticket"))],
    "api/v1/auth/signup": [
        Op(
            "POST",
            "public",
            p("/api/v1/auth/signup"),
            lambda w, who, mode: {"username": f"new-{who}-{mode}", "password": "a-long-pw-123"},
        )
    ],
    "api/v1/auth/token": [
        # Someone else's username with a wrong password never yields A's token.
        Op(
            "POST",
            "public",
            p("/api/v1/auth/token"),
            lambda w, who, mode: {"username": w.a.username, "password": "wrong-password-1"},
            ok=frozenset({401}),
        )
    ],
    "api/v1/me": [Op("GET", "self", p("/api/v1/me"))],
    "api/v1/balances": [Op("GET", "self", p("/api/v1/balances?mode={mode}"))],
    "api/v1/paper/faucet": [Op("POST", "self", p("/api/v1/paper/faucet"))],
    "api/v1/paper/reset": [Op("POST", "self", p("/api/v1/paper/reset"))],
    "api/v1/paper/leaderboard": [Op("GET", "self", p("/api/v1/paper/leaderboard"))],
    "api/v1/user/<uuid:trader_id>/link-wallet": [
        Op("GET", "owned", wallet_path),
        Op(
            "POST",
            "owned",
            wallet_path,
            lambda w, who, mode: {
                "address": A_WALLET,
                "signature": "0x" + "11" * 65,
                "nonce": "not-a-nonce",
            },
            # A's own answer is refused for its bad nonce; everyone else never gets there.
            ok=frozenset({400}),
        ),
    ],
    "api/v1/user/<uuid:trader_id>/link-wallet/<str:address>": [
        Op(
            "DELETE",
            "owned",
            lambda w, who, mode: wallet_path(w, who, mode) + "/" + A_WALLET,
            # A pending withdrawal to it keeps it linked.
            ok=frozenset({409}),
        )
    ],
    "api/v1/vault/deposit": [
        # B and staff present A's transaction hash: it must not become theirs, nor show
        # them A's deposit.
        Op(
            "POST",
            "self",
            p("/api/v1/vault/deposit"),
            lambda w, who, mode: {"asset": "USDC", "amount": "5", "txHash": A_TX},
            ok=frozenset({200}),
            other_ok=frozenset({409}),
        )
    ],
    "api/v1/vault/withdraw": [
        # To A's wallet: only A may.
        Op(
            "POST",
            "self",
            p("/api/v1/vault/withdraw"),
            lambda w, who, mode: {"asset": "USDC", "amount": "1", "address": A_WALLET},
            ok=frozenset({201}),
            other_ok=frozenset({400}),
        )
    ],
    # Where a wallet sends deposits: the same for every signed-in trader.
    "api/v1/vault": [Op("GET", "self", p("/api/v1/vault"))],
    "api/v1/vault/transfers": [Op("GET", "self", p("/api/v1/vault/transfers"), ids=a_transfer_ids)],
    "api/v1/api-keys": [
        Op("GET", "self", p("/api/v1/api-keys"), ids=a_key_ids),
        Op(
            "POST",
            "self",
            p("/api/v1/api-keys"),
            lambda w, who, mode: {"name": "bot", "scopes": ["read"]},
        ),
    ],
    "api/v1/api-keys/<int:key_id>": [
        Op("DELETE", "owned", lambda w, who, mode: f"/api/v1/api-keys/{w.api_key_id}")
    ],
    "api/v1/markets": [Op("GET", "public", p("/api/v1/markets?mode={mode}"))],
    "api/v1/markets/<str:symbol>": [Op("GET", "public", p("/api/v1/markets/BTC-PERP?mode={mode}"))],
    "api/v1/markets/<str:symbol>/depth": [
        Op("GET", "public", p("/api/v1/markets/BTC-PERP/depth?mode={mode}"))
    ],
    "api/v1/markets/<str:symbol>/trades": [
        Op("GET", "public", p("/api/v1/markets/BTC-PERP/trades?mode={mode}"))
    ],
    "api/v1/markets/<str:symbol>/leverage": [
        Op(
            "POST",
            "self",
            p("/api/v1/markets/BTC-PERP/leverage"),
            lambda w, who, mode: {"mode": mode, "leverage": "5"},
        )
    ],
    "api/v1/metrics": [Op("GET", "public", p("/api/v1/metrics?market=BTC-PERP&mode={mode}"))],
    "api/v1/trade": [Op("POST", "self", p("/api/v1/trade"), order_body)],
    "api/v1/trade/batch": [
        Op(
            "POST",
            "self",
            p("/api/v1/trade/batch"),
            lambda w, who, mode: {"orders": [order_body(w, who, mode)]},
        )
    ],
    "api/v1/orders": [
        Op("GET", "self", p("/api/v1/orders?mode={mode}"), ids=a_order_ids),
        Op("GET", "self", p("/api/v1/orders?mode={mode}&status=FILLED"), ids=a_order_ids),
        # Cancel-all cancels the caller's orders only.
        Op("DELETE", "self", p("/api/v1/orders?mode={mode}"), ids=a_order_ids),
    ],
    "api/v1/orders/<int:order_id>": [
        Op("GET", "owned", lambda w, who, mode: f"/api/v1/orders/{w.orders[mode]}"),
        Op("DELETE", "owned", lambda w, who, mode: f"/api/v1/orders/{w.orders[mode]}"),
    ],
    "api/v1/fills": [Op("GET", "self", p("/api/v1/fills?mode={mode}"), ids=a_fill_ids)],
    "api/v1/account": [Op("GET", "self", p("/api/v1/account?mode={mode}"))],
    "api/v1/positions": [Op("GET", "self", p("/api/v1/positions?mode={mode}"))],
    # (Before the close below, which closes A's position.)
    "api/v1/positions/<str:symbol>/tpsl": [
        Op(
            "POST",
            "self",
            p("/api/v1/positions/BTC-PERP/tpsl"),
            lambda w, who, mode: {"mode": mode},  # reads them back, changes nothing
            ok=frozenset({200}),
            other_ok=frozenset({400}),  # NO_POSITION: A's position is not theirs
        )
    ],
    "api/v1/positions/<str:symbol>/close": [
        Op(
            "POST",
            "self",
            p("/api/v1/positions/BTC-PERP/close"),
            lambda w, who, mode: {"mode": mode},
            ok=frozenset({201}),
            other_ok=frozenset({400}),  # NO_POSITION: A's position is not theirs to close
        )
    ],
    "account/": [Op("GET", "self", p("/account/"), pages=True)],
    "trade/<str:symbol>/": [Op("GET", "public", p("/trade/BTC-PERP/?mode={mode}"), pages=True)],
}


@dataclass
class Tally:
    cells: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)


def run_cell(w: World, t: Tally, op: Op, who: str, via: str, mode: str) -> None:
    path = op.path(w, who, mode)
    body = op.body(w, who, mode) if op.body else None
    label = f"{op.method} {path} as {who}/{via}/{mode}"

    def cell() -> None:
        before = a_state(w)
        resp = call(w, who, via, op.method, path, body)
        t.cells += 1
        status = resp.status_code
        t.check(status < 500, f"{label}: {status}")
        anonymous = who == "anon" or (op.pages and via == "token")
        if op.kind != "public" and anonymous:
            if op.pages:
                t.check(
                    status == 302 and "/accounts/login/" in resp["Location"],
                    f"{label}: {status}",
                )
            else:
                t.check(
                    status == 401 and error_code(resp) == "UNAUTHENTICATED",
                    f"{label}: {status}",
                )
        elif op.kind == "owned" and who != "A":
            t.check(status == 404 and error_code(resp) == "NOT_FOUND", f"{label}: {status}")
        elif op.kind == "self" and who != "A" and op.other_ok is not None:
            t.check(status in op.other_ok, f"{label}: {status} {resp.content[:200]!r}")
        else:
            t.check(status in op.ok, f"{label}: {status} {resp.content[:200]!r}")
        if who != "A":
            text = resp.content.decode("utf-8", "replace")
            for marker in w.markers():
                t.check(marker not in text, f"{label}: shows A's {marker!r}")
            if op.ids and status in OK and "json" in resp.get("Content-Type", ""):
                t.check(
                    not (listed_ids(resp.json()) & op.ids(w, mode)),
                    f"{label}: lists A's ids",
                )
            t.check(a_state(w) == before, f"{label}: changed A's data")
        elif op.ids and op.method == "GET" and status in OK and "status=" not in path:
            # The positive control: the same listing shows A their own rows.
            t.check(listed_ids(resp.json()) & op.ids(w, mode), f"{label}: A sees nothing")

    in_savepoint(cell)


def listed_ids(body: Any) -> set[int]:
    rows = body.get("results", body.get("canceledIds", [])) if isinstance(body, dict) else body
    out = set()
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("id"), int):
            out.add(row["id"])
        elif isinstance(row, int):
            out.add(row)
    return out


def combos(pages: bool):
    for who in PRINCIPALS:
        for via in ("session",) if who == "anon" else ("token", "session"):
            for mode in MODES:
                yield who, via, mode


def test_every_endpoint_is_in_the_matrix() -> None:
    """A new API endpoint or page without a row here fails the suite."""
    routes = {r for r, _ in url_routes() if in_scope(r)}
    api_and_pages = {r for r in routes if not r.startswith("admin/")}
    assert not (api_and_pages - set(MATRIX)), sorted(api_and_pages - set(MATRIX))
    assert not (set(MATRIX) - api_and_pages), sorted(set(MATRIX) - api_and_pages)
    # Every method a view answers has a row.
    for route, callback in url_routes():
        if route in MATRIX and view_methods(callback):
            covered = {op.method for op in MATRIX[route]}
            assert view_methods(callback) <= covered, (route, view_methods(callback), covered)
    admin = {r for r in routes if r.startswith("admin/")}
    assert len(admin) > 50  # every registered model's pages, walked below


def test_api_and_pages_matrix(world: World) -> None:
    t = Tally()
    for route in MATRIX:
        for op in MATRIX[route]:
            for who, via, mode in combos(op.pages):
                run_cell(world, t, op, who, via, mode)
    assert t.failures == [], "\n".join(t.failures[:40])
    # 33 routes, 38 operations x (1 anonymous + 3 principals x 2 credentials) x 2 modes.
    assert t.cells == sum(len(ops) for ops in MATRIX.values()) * 14
    print(f"api/pages matrix: {t.cells} cells")


# -- admin --------------------------------------------------------------------------------


def admin_urls(w: World) -> list[tuple[str, str]]:
    """(route, concrete URL) of every admin page, with a real object where it takes one."""
    from django.contrib.contenttypes.models import ContentType

    out = []
    for route, callback in url_routes():
        if not route.startswith("admin/"):
            continue
        rest = route[len("admin/") :]
        model_admin = getattr(callback, "model_admin", None)
        if model_admin is not None:
            obj = model_admin.model._default_manager.order_by("pk").first()
            pk = str(obj.pk) if obj is not None else "1"
            url = "/" + route.replace("<path:object_id>", pk)
        elif "<int:content_type_id>" in rest:
            ct = ContentType.objects.get_for_model(Order)
            url = "/admin/" + rest.replace("<int:content_type_id>", str(ct.pk)).replace(
                "<path:object_id>", str(w.orders["REAL"])
            )
        elif rest.startswith("^(?P<app_label>"):
            url = "/admin/accounts/"
        elif "(?P<url>" in rest:
            url = "/admin/no-such-page/"
        else:
            url = "/" + route
        out.append((route, url))
    return out


def test_admin_pages_refuse_everyone_but_staff(world: World) -> None:
    t = Tally()
    urls = admin_urls(world)
    open_to_all = {"/admin/login/"}
    for route, url in urls:
        # Admin pages take no mode: one mode suffices.
        for who, via, mode in (c for c in combos(pages=True) if c[2] == "REAL"):
            staff_session = who == "staff" and via == "session"
            label = f"GET {url} ({route}) as {who}/{via}/{mode}"

            def cell(url=url, who=who, via=via, label=label, staff_session=staff_session):
                before = a_state(world)
                resp = call(world, who, via, "GET", url + f"?mode={mode}")
                t.cells += 1
                t.check(resp.status_code < 500, f"{label}: {resp.status_code}")
                if url in open_to_all or route.endswith("logout/"):
                    return
                if staff_session:
                    return
                t.check(
                    resp.status_code == 302 and "/admin/login/" in resp["Location"],
                    f"{label}: {resp.status_code}",
                )
                t.check(a_state(world) == before, f"{label}: changed data")

            in_savepoint(cell)
    assert t.failures == [], "\n".join(t.failures[:40])
    assert t.cells == len(urls) * 7
    print(f"admin pages: {t.cells} cells")


# (app, model, action, the selected object, whether staff changes A's data with it)
ADMIN_ACTIONS = [
    ("trading", "market", "pause", lambda w: w.market.pk, True),
    ("trading", "market", "resume", lambda w: w.market.pk, False),
    ("trading", "market", "delist", lambda w: w.market.pk, True),
    ("accounts", "deposit", "confirm", lambda w: w.deposit_id, True),
    ("accounts", "deposit", "reject", lambda w: w.deposit_id, True),
    ("accounts", "withdrawal", "approve", lambda w: w.withdrawal_id, True),
    ("accounts", "withdrawal", "reject", lambda w: w.withdrawal_id, True),
    ("accounts", "user", "delete_selected", lambda w: w.a.pk, False),
]


def test_admin_actions_are_staff_only(world: World) -> None:
    """pause / resume / delist, deposit confirm / reject, withdrawal approve / reject and
    user deletion: nothing happens for anyone but signed-in staff, who can do them."""
    t = Tally()
    for app, model, action, pk_of, effective in ADMIN_ACTIONS:
        url = f"/admin/{app}/{model}/"
        for who, via, mode in combos(pages=True):
            label = f"{action} on {url} as {who}/{via}/{mode}"

            def cell(url=url, action=action, pk_of=pk_of, who=who, via=via, label=label):
                before = a_state(world)
                form = {
                    "action": action,
                    "_selected_action": [str(pk_of(world))],
                    "apply": "1",
                    "post": "yes",
                    f"tx_{world.withdrawal_id}": "0x" + "cd" * 32,
                }
                client = world.sessions.get(who) if via == "session" else None
                client = client or Client()
                extra = {}
                if via == "token" and who != "anon":
                    extra["HTTP_AUTHORIZATION"] = f"Token {world.tokens[who]}"
                resp = client.post(url, form, **extra)
                t.cells += 1
                t.check(resp.status_code < 500, f"{label}: {resp.status_code}")
                if who == "staff" and via == "session":
                    if effective:
                        t.check(a_state(world) != before, f"{label}: staff action did nothing")
                    return
                t.check(
                    resp.status_code == 302 and "/admin/login/" in resp["Location"],
                    f"{label}: {resp.status_code}",
                )
                t.check(a_state(world) == before, f"{label}: changed data")

            in_savepoint(cell)
    assert t.failures == [], "\n".join(t.failures[:40])
    assert t.cells == len(ADMIN_ACTIONS) * 14
    print(f"admin actions: {t.cells} cells")


def test_a_staff_user_without_change_permission_cannot_pause_a_market(world: World) -> None:
    from django.contrib.auth.models import Permission

    viewer = UserFactory(username="viewer-authz", is_staff=True)
    viewer.save()
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_market"),
        Permission.objects.get(codename="view_deposit"),
    )
    client = Client()
    client.force_login(viewer)
    before = a_state(world)
    for app, model, action, pk_of, _ in ADMIN_ACTIONS[:5]:
        resp = client.post(
            f"/admin/{app}/{model}/", {"action": action, "_selected_action": [str(pk_of(world))]}
        )
        assert resp.status_code < 500
        engine_cache_clear()
    assert a_state(world) == before
    # The viewer is signed in and sees the pages: the refusal is about the actions.
    assert client.get("/admin/trading/market/").status_code == 200


# -- WebSocket ----------------------------------------------------------------------------


ws = pytest.mark.django_db(transaction=True)


async def _recv(comm, timeout: float = 3) -> dict:
    out = await comm.receive_output(timeout=timeout)
    if out["type"] == "websocket.close":
        return {"type": "__closed__", "code": out.get("code")}
    return json.loads(out["text"])


async def _recv_until(comm, type_: str, timeout: float = 3) -> dict:
    while True:
        msg = await _recv(comm, timeout)
        if msg["type"] in (type_, "__closed__"):
            return msg


@pytest.fixture
def socket_channels(monkeypatch) -> list[str]:
    """The channel-layer channel of each socket, in the order they connect: the path
    every group event to a socket takes, in order."""
    from realtime.consumers import ExchangeConsumer

    opened: list[str] = []
    real = ExchangeConsumer.connect

    async def connect(self) -> None:
        opened.append(self.channel_name)
        await real(self)

    monkeypatch.setattr(ExchangeConsumer, "connect", connect)
    return opened


async def _after_the_events_of(user: User) -> None:
    """Return once the events of `user`'s commits so far have reached this process: a
    marker published after them, through the same in-order publishing as every
    commit's events, has arrived in the user's group. Whatever they would wrongly have
    reached is by then queued on that socket's channel."""
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from realtime import broadcast, names

    layer = get_channel_layer()
    group = names.trader_channel(user.trader_id)
    observer = await layer.new_channel()
    await layer.group_add(group, observer)

    async def next_type() -> str:
        event = await asyncio.wait_for(layer.receive(observer), 10)
        return json.loads(event["text"])["type"]

    await sync_to_async(broadcast.publish)([broadcast.message("marker", group, {})])
    while await next_type() != "marker":
        pass  # the user's own events, still on their way, come first
    await layer.group_discard(group, observer)


async def _carried_nothing(comm, channel: str) -> None:
    """The socket has sent nothing since its last message read: an `auth.revoke` sent on
    its own channel (behind whatever that channel already holds) ends it, and its
    notice is the first thing it says."""
    from channels.layers import get_channel_layer

    await get_channel_layer().send(channel, {"type": "auth.revoke"})
    said = []
    while (msg := await _recv(comm, timeout=5))["type"] != "__closed__":
        said.append(msg)
    assert [m.get("code") for m in said] == ["UNAUTHENTICATED"], said


def _ws_world():
    from channels.db import database_sync_to_async

    return database_sync_to_async(build_world)()


def _place(user: User, mode: str = "PAPER", price: str = "1000") -> Any:
    from channels.db import database_sync_to_async

    return database_sync_to_async(order_place)(
        trader=user,
        market="BTC-PERP",
        mode=mode,
        side="BUY",
        type="LIMIT",
        price=Decimal(price),
        qty=Decimal("0.01"),
    )


def _session_key(w: World, who: str) -> str:
    return w.sessions[who].cookies["sessionid"].value


def _cookie_communicator(session_key: str, origin: str | None = "http://localhost"):
    from channels.testing import WebsocketCommunicator

    from dexsite.asgi import application

    headers = [(b"host", b"localhost"), (b"cookie", f"sessionid={session_key}".encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, "/ws/", headers=headers)


@ws
@pytest.mark.asyncio
async def test_ws_origin_and_trader_channels(layer, socket_channels) -> None:
    from realtime.tests.conftest import communicator

    w = await _ws_world()
    cells = 0
    for origin in ("https://evil.example", "null", "http://localhost.evil.example"):
        comm = communicator(origin=origin)
        assert not (await comm.connect())[0], origin
        cells += 1
        # A's cookie sent from a foreign page is refused the same way.
        comm = _cookie_communicator(_session_key(w, "A"), origin=origin)
        assert not (await comm.connect())[0], origin
        cells += 1
    # A session cookie without any Origin is refused (only bots omit it, with a token).
    assert not (await _cookie_communicator(_session_key(w, "A"), origin=None).connect())[0]
    cells += 1

    sockets = {
        "anon": communicator(),
        "B-token": communicator(token=w.tokens["B"]),
        "B-session": _cookie_communicator(_session_key(w, "B")),
        "staff-token": communicator(token=w.tokens["staff"]),
    }
    channel_of = {}
    for name, comm in sockets.items():
        assert (await comm.connect())[0], name
        channel_of[name] = socket_channels[-1]
        for channel in (f"trader.{w.a.trader_id}", f"trader.{str(w.a.trader_id).upper()}"):
            await comm.send_json_to({"action": "subscribe", "channel": channel})
            msg = await _recv(comm)
            assert (msg["type"], msg.get("code")) == ("error", "FORBIDDEN"), (name, msg)
            cells += 1
    # Also through the query string.
    for name, comm in (
        ("anon-query", communicator(f"/ws/?traderId={w.a.trader_id}")),
        ("B-query", communicator(f"/ws/?traderId={w.a.trader_id}", token=w.tokens["B"])),
    ):
        assert (await comm.connect())[0]
        channel_of[name] = socket_channels[-1]
        assert (await _recv(comm))["code"] == "FORBIDDEN", name
        sockets[name] = comm
        cells += 1
    # A's events reach none of them: once they have reached this process, each socket's
    # next word is the one sent on its own channel after them.
    await _place(w.a, "PAPER")
    await _place(w.a, "REAL")
    await _after_the_events_of(w.a)
    for name, comm in sockets.items():
        await _carried_nothing(comm, channel_of[name])
        await comm.disconnect()
        cells += 1
    print(f"websocket authorization: {cells} cells")


async def _private_socket(w: World, how: str):
    from realtime.tests.conftest import communicator

    if how == "session":
        comm = _cookie_communicator(_session_key(w, "A"))
    elif how == "session-ticket":
        # A ticket asked for with the session; no cookie on the socket.
        from channels.db import database_sync_to_async

        ask = database_sync_to_async(w.sessions["A"].post)
        ticket = (await ask("/api/v1/ws-ticket")).json()["ticket"]
        comm = communicator(f"/ws/?ticket={ticket}")
    else:
        comm = communicator(token=w.tokens["A"])
    assert (await comm.connect())[0]
    await comm.send_json_to({"action": "subscribe", "channel": f"trader.{w.a.trader_id}"})
    assert (await _recv(comm))["type"] == "subscribed"
    await _place(w.a, "PAPER")
    assert (await _recv_until(comm, "orderUpdate"))["type"] == "orderUpdate"
    return comm


async def _assert_ended(comm, w: World) -> None:
    """The socket says why, closes with 4008, and carries no private event after."""
    seen = []
    while True:
        msg = await _recv(comm, timeout=5)
        if msg["type"] == "__closed__":
            assert msg["code"] == 4008
            break
        seen.append(msg)
    assert any(m.get("code") == "UNAUTHENTICATED" for m in seen), seen
    await _place(w.a, "PAPER", price="1001")
    await _after_the_events_of(w.a)
    # A closed socket says nothing, whatever it is sent, so no marker can come back from
    # it: the order's events have reached this process, and the socket gets a bounded
    # moment to (wrongly) forward what its channel holds.
    assert await comm.receive_nothing(timeout=0.3)


@ws
@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["session", "session-ticket"])
async def test_ws_logout_in_another_request_ends_the_socket(layer, how) -> None:
    from channels.db import database_sync_to_async

    w = await _ws_world()
    comm = await _private_socket(w, how)
    resp = await database_sync_to_async(w.sessions["A"].post)("/accounts/logout/")
    assert resp.status_code == 302
    await _assert_ended(comm, w)


@ws
@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["session", "session-ticket"])
async def test_ws_deleted_session_ends_the_socket(layer, how) -> None:
    from channels.db import database_sync_to_async
    from django.contrib.sessions.models import Session

    w = await _ws_world()
    comm = await _private_socket(w, how)
    key = _session_key(w, "A")
    await database_sync_to_async(lambda: Session.objects.filter(session_key=key).delete())()
    await _assert_ended(comm, w)


@ws
@pytest.mark.asyncio
async def test_ws_revoked_api_key_stops_private_deliveries(layer, monkeypatch) -> None:
    from channels.db import database_sync_to_async

    from realtime import consumers

    monkeypatch.setattr(consumers, "REVALIDATE_SECONDS", 0.0)
    w = await _ws_world()
    comm = await _private_socket(w, "token")
    await database_sync_to_async(
        lambda: ApiKey.objects.filter(trader=w.a).update(revoked_at="2020-01-01T00:00Z")
    )()
    # The next private event finds the key revoked: it is not delivered.
    await _place(w.a, "PAPER", price="1002")
    await _assert_ended(comm, w)


@ws
@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["session", "session-ticket"])
async def test_ws_expired_session_stops_private_deliveries(layer, monkeypatch, how) -> None:
    from channels.db import database_sync_to_async
    from django.contrib.sessions.models import Session

    from realtime import consumers

    monkeypatch.setattr(consumers, "REVALIDATE_SECONDS", 0.0)
    w = await _ws_world()
    comm = await _private_socket(w, how)
    key = _session_key(w, "A")
    await database_sync_to_async(
        lambda: Session.objects.filter(session_key=key).update(expire_date="2020-01-01T00:00Z")
    )()
    await _place(w.a, "PAPER", price="1002")
    await _assert_ended(comm, w)


@ws
@pytest.mark.asyncio
async def test_ws_public_channels_unaffected_by_a_revocation_of_someone_else(layer) -> None:
    """B logging out ends B's socket only: A's private socket keeps its deliveries."""
    from channels.db import database_sync_to_async

    w = await _ws_world()
    comm_a = await _private_socket(w, "session")
    comm_b = _cookie_communicator(_session_key(w, "B"))
    assert (await comm_b.connect())[0]
    await database_sync_to_async(w.sessions["B"].post)("/accounts/logout/")
    assert (await _recv(comm_b, timeout=5))["code"] == "UNAUTHENTICATED"
    # B's revocation was published before A's order, in order: one that reached A's
    # socket too would end it before the order's update arrives.
    await _place(w.a, "PAPER", price="1003")
    assert (await _recv_until(comm_a, "orderUpdate"))["type"] == "orderUpdate"
    await comm_a.disconnect()


# The channel layer fixture of the realtime tests (emptied after each test).
layer = realtime_conftest.layer
