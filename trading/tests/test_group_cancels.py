"""Cancels in a group: a matcher's batch carries the cancels among its placings in one
transaction, and everything ends exactly as if each request had been carried out alone,
one after another: the same answers, refusals and rows."""

import random
import re
import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from accounts.models import User
from dexsite.errors import ExchangeError
from ledger.models import Balance
from trading.invariants import check_invariants
from trading.matcher.requests import CANCEL, PLACE, MatcherRequest, request_run
from trading.models import Book, Order
from trading.orders import place as order_services
from trading.orders.cancel import order_cancel
from trading.orders.place import _place_alone, _place_together, order_cancel_on, order_place
from trading.orders.request import CancelRequest, OrderRequest
from trading.services.books import engine_cache_clear
from trading.tests.factories import MarketFactory, UserFactory, fund
from trading.tests.test_concurrency import requires_postgres, run_threads
from trading.tests.test_group_commit import (
    ALONE,
    GROUPED,
    _locked_elsewhere,
    _outcome,
    _queued,
    _requests,
    _shown,
    _state,
    _until,
    exact_decimals,
    two_books_and_traders,
)
from trading.tests.wire import commits

D = Decimal

# A flow's item: ("place", symbol, OrderRequest), or ("cancel", symbol, trader, k): a
# cancel by `trader` of the k-th order placed by the flow (or of the k-th stop order
# held before it, for k < 0).
Item = tuple


def _flow(rng: random.Random, traders: list, n: int) -> list[Item]:
    """`_requests`' flow with a cancel before about one order in three: mostly of one
    of its trader's orders placed earlier (resting, filled or cancelled by then), some of
    another trader's (not theirs to cancel), some of a stop order waiting for its trigger."""
    flow: list[Item] = []
    books: list[tuple[str, Any]] = []  # the book and owner of each order placed
    for placed, (symbol, request) in enumerate(_requests(rng, traders, n)):
        if placed and rng.random() < 0.35:
            # Mostly a recent order (older ones have mostly traded), or a stop.
            k = rng.choice([rng.randrange(max(0, placed - 8), placed), rng.randrange(-4, placed)])
            book, owner = ("BTC-PERP", traders[:4][k]) if k < 0 else books[k]
            who = owner if rng.random() < 0.85 else rng.choice(traders)
            # Sent to the book its order rests on, as the matcher's queues are.
            flow.append(("cancel", book, who, k))
        flow.append(("place", symbol, request))
        books.append((symbol, request.trader))
    return flow


def _stops(traders: list, mode: str) -> list[int]:
    """Four stop orders waiting for their trigger, one each of the first traders."""
    ids = []
    for t in traders[:4]:
        body, _ = order_place(
            trader=t,
            market="BTC-PERP",
            mode=mode,
            side="SELL",
            type="STOP_MARKET",
            qty=D("0.01"),
            trigger_price=D("1000"),
        )
        ids.append(body["id"])
    return ids


def _target(k: int, placed: list[int | None], stops: list[int]) -> int | None:
    return stops[k] if k < 0 else placed[k]


def _shown_any(outcome: Any) -> Any:
    if outcome is None:
        return None
    if isinstance(outcome, ExchangeError):
        # A cancel's refusal names the order, whose id differs between the runs.
        return ("refused", outcome.code, re.sub(r"order \d+", "order", str(outcome)))
    if isinstance(outcome, dict):
        return _shown((outcome, True))
    return _shown(outcome)


@exact_decimals
@pytest.mark.django_db
@pytest.mark.parametrize("seed", [4, 5])
def test_placings_and_cancels_grouped_end_as_if_carried_out_one_by_one(seed):
    traders = two_books_and_traders()
    rng = random.Random(seed)
    flow = _flow(rng, traders, 240)
    stops = {mode: _stops(traders, mode) for mode in (ALONE, GROUPED)}

    def order_id(outcome: Any) -> int | None:
        return outcome[0]["id"] if isinstance(outcome, tuple) else None

    # Alone: each in its own transaction.
    alone: list[Any] = []
    placed: list[int | None] = []
    for item in flow:
        if item[0] == "place":
            _, symbol, request = item
            outcome = _outcome(lambda s=symbol, r=request: _place_alone(s, ALONE, r))
            placed.append(order_id(outcome))
        else:
            _, symbol, who, k = item
            target = _target(k, placed, stops[ALONE])
            if target is None:
                outcome = None  # its order was refused: no cancel
            else:
                outcome = _outcome(lambda w=who, t=target: order_cancel(trader=w, order_id=t))
        alone.append(outcome)

    # Grouped: consecutive items of one book in one transaction, as a matcher's batch.
    grouped: list[Any] = []
    placed = []
    mixed = 0  # groups with placings and a cancel carried out
    i = 0
    while i < len(flow):
        symbol = flow[i][1]
        size = rng.randint(1, 12)
        group: list[OrderRequest | CancelRequest] = []
        at: list[int] = []  # flow index of each request of the group
        skipped: list[int] = []
        j = i
        while j < len(flow) and j - i < size and flow[j][1] == symbol:
            item = flow[j]
            if item[0] == "place":
                group.append(item[2])
            else:
                _, _, who, k = item
                if k >= len(placed) + sum(1 for x in group if isinstance(x, OrderRequest)):
                    raise AssertionError("a cancel of an order not yet placed")
                if k >= len(placed):
                    # Its order is in this group: its id is not known before the group
                    # commits (nor to any client), so the group ends before the cancel.
                    break
                target = _target(k, placed, stops[GROUPED])
                if target is None:
                    skipped.append(j)
                    j += 1
                    continue
                group.append(CancelRequest(who, target, symbol, GROUPED))
            at.append(j)
            j += 1
        outcomes = _place_together(symbol, GROUPED, group) if group else []
        if any(isinstance(r, OrderRequest) for r in group):
            mixed += any(isinstance(o, dict) for o in outcomes)
        results: dict[int, Any] = dict(zip(at, outcomes, strict=True))
        results.update((s, None) for s in skipped)
        for n in range(i, j):
            outcome = results[n]
            grouped.append(outcome)
            if flow[n][0] == "place":
                placed.append(order_id(outcome))
        i = j

    assert [_shown_any(o) for o in grouped] == [_shown_any(o) for o in alone]
    codes = [
        o.code
        for o, item in zip(alone, flow)
        if item[0] == "cancel" and isinstance(o, ExchangeError)
    ]
    cancelled = [o for o, item in zip(alone, flow) if item[0] == "cancel" and isinstance(o, dict)]
    # The flow cancels resting orders and stops, and is refused both ways.
    assert len(cancelled) > 8 and {"NOT_FOUND", "ORDER_NOT_OPEN"} <= set(codes)
    assert any(o["type"] == "STOP_MARKET" for o in cancelled)
    assert mixed > 5
    assert _state(GROUPED) == _state(ALONE)
    assert check_invariants() == []


def _rests(trader, price: str, side: str = "BUY", qty: str = "0.1") -> OrderRequest:
    return OrderRequest(trader, side, "LIMIT", D(qty), D(price), "GTC", False, None, "USER")


@pytest.mark.django_db
def test_a_cancel_releases_its_reservation_once_even_when_the_group_filled_the_order():
    """A maker's order is filled by a placing of the group, then its owner's cancel (sent
    before it learnt of the fill) is refused: nothing is released twice. Another order of
    the maker, cancelled in the same group, gives back exactly its reservation."""
    MarketFactory()
    maker, taker = UserFactory(), UserFactory()
    fund(maker, "100000", mode=GROUPED)
    fund(taker, "100000", mode=GROUPED)
    (first, _), (second, _) = _place_together(
        "BTC-PERP", GROUPED, [_rests(maker, "64000"), _rests(maker, "63000")]
    )
    locked = Balance.objects.get(trader=maker, asset="USDC", mode=GROUPED).locked
    reserved_second = Order.objects.get(pk=second["id"]).reserved
    assert locked > reserved_second > 0

    take, refused, gone = _place_together(
        "BTC-PERP",
        GROUPED,
        [
            _rests(taker, "64000", side="SELL"),
            CancelRequest(maker, first["id"], "BTC-PERP", GROUPED),
            CancelRequest(maker, second["id"], "BTC-PERP", GROUPED),
        ],
    )
    assert take[0]["status"] == "FILLED"
    assert isinstance(refused, ExchangeError) and refused.code == "ORDER_NOT_OPEN"
    assert gone["status"] == "CANCELED" and gone["id"] == second["id"]
    assert Balance.objects.get(trader=maker, asset="USDC", mode=GROUPED).locked == 0
    assert check_invariants() == []


@pytest.mark.django_db
def test_a_cancel_of_someone_elses_order_in_a_group_is_not_found_and_changes_nothing():
    MarketFactory()
    owner, thief = UserFactory(), UserFactory()
    fund(owner, "100000", mode=GROUPED)
    fund(thief, "100000", mode=GROUPED)
    ((rests, _),) = _place_together("BTC-PERP", GROUPED, [_rests(owner, "64000")] * 1)
    placed, refused = _place_together(
        "BTC-PERP",
        GROUPED,
        [_rests(thief, "60000"), CancelRequest(thief, rests["id"], "BTC-PERP", GROUPED)],
    )
    assert placed[0]["status"] == "NEW"
    assert isinstance(refused, ExchangeError) and refused.code == "NOT_FOUND"
    assert Order.objects.get(pk=rests["id"]).status == "NEW"
    assert check_invariants() == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="counts PostgreSQL's COMMITs")
@pytest.mark.django_db(transaction=True)
def test_a_matchers_batch_of_placings_and_cancels_commits_once():
    """What the matcher carries out for a book's waiting requests: the placings and the
    cancels among them in one transaction, each answered as alone."""
    MarketFactory()
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    order = {"market": "BTC-PERP", "mode": "PAPER", "side": "BUY", "type": "LIMIT"}
    resting = [
        order_place(trader=alice, **order, qty=D("0.01"), price=D(p))[0]["id"]
        for p in ("63000", "63001")
    ]
    book = {"market": "BTC-PERP", "mode": "PAPER"}
    requests = [
        MatcherRequest(PLACE, bob, [order | {"qty": D("0.02"), "price": D("62000")}]),
        MatcherRequest(CANCEL, alice, order_id=resting[0], args=book),
        MatcherRequest(
            PLACE, bob, [order | {"side": "SELL", "qty": D("0.01"), "price": D("63001")}]
        ),
        MatcherRequest(CANCEL, alice, order_id=resting[1], args=book),  # filled just before
        MatcherRequest(CANCEL, bob, order_id=resting[0], args=book),  # not bob's
    ]
    answers: list[Any] = []
    assert commits(lambda: answers.extend(request_run(requests))) == 1
    assert answers[0][0][0]["status"] == "NEW"
    assert len(answers[1]) == 1 and answers[1][0]["status"] == "CANCELED"
    assert answers[2][0][0]["status"] == "FILLED"
    assert isinstance(answers[3], ExchangeError) and answers[3].code == "ORDER_NOT_OPEN"
    assert isinstance(answers[4], ExchangeError) and answers[4].code == "NOT_FOUND"
    # A cancel from a sender that does not name the book is carried out alone.
    answers = []
    bobs = Order.objects.get(trader=bob, status="NEW").pk
    earlier_release = MatcherRequest(CANCEL, bob, order_id=bobs)
    assert commits(lambda: answers.extend(request_run([earlier_release]))) == 1
    assert answers[0][0]["status"] == "CANCELED"
    assert check_invariants() == []


@pytest.mark.django_db
def test_a_cancels_events_leave_with_its_groups_in_order(
    received, django_capture_on_commit_callbacks
):
    """The cancel's book delta takes the next seq between the placings' deltas, and its
    order event shows it cancelled."""
    MarketFactory()
    maker, taker = UserFactory(), UserFactory()
    fund(maker, "100000", mode=GROUPED)
    fund(taker, "100000", mode=GROUPED)
    ((rests, _),) = _place_together("BTC-PERP", GROUPED, [_rests(maker, "63000")] * 1)
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = _place_together(
            "BTC-PERP",
            GROUPED,
            [
                _rests(taker, "62000"),
                CancelRequest(maker, rests["id"], "BTC-PERP", GROUPED),
                _rests(taker, "61000"),
            ],
        )
        assert received == [], "nothing leaves before the commit"
    assert outcomes[1]["status"] == "CANCELED"
    books = [kw for name, kw in received if name == "book_changed"]
    assert [b["seq"] for b in books] == [books[0]["seq"] + n for n in range(3)]
    assert books[1]["bids"] == [["63000", "0"]]
    orders = [kw["order"] for name, kw in received if name == "order_updated"]
    assert [(o["id"], o["status"]) for o in orders] == [
        (outcomes[0][0]["id"], "NEW"),
        (rests["id"], "CANCELED"),
        (outcomes[2][0]["id"], "NEW"),
    ]
    assert Balance.objects.get(trader=maker, asset="USDC", mode=GROUPED).locked == 0
    assert check_invariants() == []


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_threads_placing_and_cancelling_on_one_book_share_transactions(monkeypatch, settings):
    """The embedded path: eight threads each place an order and cancel their last one
    still resting, in turn. Cancels that arrive while the book's transaction runs go
    into the next one with the placings; every acknowledged cancel left its order
    cancelled, and the books balance. The overlap is made: another connection holds the
    book until the eight first requests wait."""
    settings.ORDER_GROUP_MAX = 32
    market = MarketFactory()
    traders = [UserFactory() for _ in range(8)]
    for t in traders:
        fund(t, "5000000")
    groups: list[list[str]] = []
    lock = threading.Lock()
    real = order_services._place_together

    def counted(symbol, mode, requests):
        with lock:
            groups.append([type(r).__name__ for r in requests])
        return real(symbol, mode, requests)

    monkeypatch.setattr(order_services, "_place_together", counted)
    placed = [
        order_place(
            trader=t, market="BTC-PERP", mode="PAPER", side="BUY", type="LIMIT",
            price=D("63950"), qty=D("0.01"),
        )[0]["id"]
        for t in traders
    ]  # fmt: skip
    groups.clear()
    cancelled: list[int] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        trader = User.objects.get(pk=traders[i].pk)
        last = placed[i]
        for n in range(30):
            if n % 2 == 0:
                body = order_cancel_on(
                    trader=trader, order_id=last, market="BTC-PERP", mode="PAPER"
                )
                assert body["status"] == "CANCELED"
                with lock:
                    cancelled.append(last)
                continue
            # Buys below 63,975, sells above 64,025: nothing crosses, every order rests.
            buy = i % 2 == 1
            away = rng.randint(50, 60) * D("0.5")
            body, _ = order_place(
                trader=trader, market="BTC-PERP", mode="PAPER", side="BUY" if buy else "SELL",
                type="LIMIT", price=D(64000) - away if buy else D(64000) + away,
                qty=D("0.001") * rng.randint(10, 100),
            )  # fmt: skip
            assert body["status"] == "NEW"
            last = body["id"]

    errors: list[BaseException] = []
    threads = threading.Thread(target=lambda: errors.extend(run_threads(8, work)))
    with _locked_elsewhere(Book.objects.filter(market=market, mode="PAPER")):
        threads.start()
        _until(lambda: len(groups) == 1 and _queued(("BTC-PERP", "PAPER")) == 7)
    threads.join(120)
    assert not threads.is_alive() and errors == []
    assert sum(len(g) for g in groups) == 240
    # The leader's cancel alone, then the seven cancels that had queued behind it together
    # (with whatever was sent meanwhile).
    assert groups[0] == ["CancelRequest"], groups[:2]
    assert groups[1][:7] == ["CancelRequest"] * 7, groups[:2]
    assert any({"CancelRequest", "OrderRequest"} <= set(g) for g in groups), groups
    assert set(Order.objects.filter(pk__in=cancelled).values_list("status", flat=True)) == {
        "CANCELED"
    }
    assert len(cancelled) == 120
    assert check_invariants() == []
    engine_cache_clear()


def _stop_order(**kw: Any) -> dict[str, Any]:
    return {
        "market": "BTC-PERP",
        "mode": "PAPER",
        "side": "SELL",
        "type": "STOP_MARKET",
        "qty": D("0.01"),
        "trigger_price": D("1000"),
    } | kw


@pytest.mark.django_db
def test_an_order_held_for_its_trigger_comes_after_the_cancel_before_it(settings):
    """A trader at CONDITIONAL_ORDERS_MAX cancels a stop and sends another: the cancel
    frees the slot before the new stop is counted, as one by one."""
    settings.CONDITIONAL_ORDERS_MAX = 1
    MarketFactory()
    alice = UserFactory()
    fund(alice, "100000")
    (first, _) = order_place(trader=alice, **_stop_order())
    book = {"market": "BTC-PERP", "mode": "PAPER"}
    cancelled, held = request_run(
        [
            MatcherRequest(CANCEL, alice, order_id=first["id"], args=book),
            MatcherRequest(PLACE, alice, [_stop_order()]),
        ]
    )
    assert cancelled[0]["status"] == "CANCELED"
    assert not isinstance(held[0], ExchangeError), held[0]
    assert held[0][0]["status"] == "UNTRIGGERED"


@pytest.mark.django_db
def test_a_repeated_client_order_id_after_a_cancel_shows_the_order_as_cancelled():
    MarketFactory()
    alice = UserFactory()
    fund(alice, "100000")
    order = {
        "market": "BTC-PERP",
        "mode": "PAPER",
        "side": "BUY",
        "type": "LIMIT",
        "qty": D("0.01"),
        "price": D("63000"),
        "client_order_id": "c1",
    }
    (first, _) = order_place(trader=alice, **order)
    book = {"market": "BTC-PERP", "mode": "PAPER"}
    _, again = request_run(
        [
            MatcherRequest(CANCEL, alice, order_id=first["id"], args=book),
            MatcherRequest(PLACE, alice, [order]),
        ]
    )
    ((replay, created),) = again
    assert not created and replay["id"] == first["id"] and replay["status"] == "CANCELED"


@pytest.mark.django_db
def test_a_request_that_faults_fails_alone_and_the_orders_around_it_stand():
    """A cancel that cannot be carried out (an order id that is no number, from a sender
    that misbehaves) faults; the placings of its batch are placed and answered so, not
    failed with it (a client told so would send them again)."""
    MarketFactory()
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    order = {"market": "BTC-PERP", "mode": "PAPER", "side": "BUY", "type": "LIMIT"}
    book = {"market": "BTC-PERP", "mode": "PAPER"}
    before, broken, after = request_run(
        [
            MatcherRequest(PLACE, bob, [order | {"qty": D("0.02"), "price": D("62000")}]),
            MatcherRequest(CANCEL, alice, order_id="not a number", args=book),
            MatcherRequest(PLACE, bob, [order | {"qty": D("0.01"), "price": D("62001")}]),
        ]
    )
    assert isinstance(broken, BaseException)
    assert before[0][0]["status"] == "NEW" and after[0][0]["status"] == "NEW"
    assert Order.objects.filter(trader=bob, status="NEW").count() == 2
    assert check_invariants() == []
