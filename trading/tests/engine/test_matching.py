"""Hand-written scenarios for the matching engine.

Most scenarios run against both the engine and the naive reference book: the expected
values are written out by hand, so this also pins the oracle that the differential
tests trust.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from trading.engine.book import (
    BUY,
    CANCELED,
    FILLED,
    FOK,
    GTC,
    IOC,
    NEW,
    PARTIALLY_FILLED,
    POST_ONLY,
    REJECTED,
    SELL,
    BookError,
    OrderBook,
)
from trading.tests.engine.reference import ReferenceBook

A, B, C = "alice", "bob", "carol"


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["engine", "reference"])
def book(request: pytest.FixtureRequest) -> Any:
    return request.param()


def seed(book: Any, *orders: tuple[Any, str, str, int, int]) -> Any:
    """Rest (order_id, owner, side, price, qty) tuples in the given arrival order."""
    for order_id, owner, side, price, qty in orders:
        book.add_resting(order_id, owner, side, price, qty)
    return book


def fills(result: Any) -> list[tuple[Any, int, int]]:
    return [(f.maker_id, f.price, f.qty) for f in result.fills]


def assert_rejected_untouched(book: Any, result: Any, qty: int, reason: str, before: Any) -> None:
    assert result.status == REJECTED
    assert result.reject_reason == reason
    assert result.filled == 0
    assert result.remaining == qty
    assert not result.rested
    assert result.fills == []
    assert result.stp_canceled == []
    assert result.bid_deltas == {}
    assert result.ask_deltas == {}
    assert not result.changed
    assert book.depth() == before


# -- LIMIT GTC -----------------------------------------------------------------------


def test_gtc_rests_on_empty_book(book: Any) -> None:
    r = book.place("b1", A, BUY, 5, 100)
    assert r.status == NEW
    assert r.rested
    assert (r.filled, r.remaining) == (0, 5)
    assert r.fills == []
    assert r.bid_deltas == {100: 5}
    assert r.ask_deltas == {}
    assert book.depth() == ([(100, 5)], [])
    assert book.best_bid() == 100
    assert book.best_ask() is None


def test_gtc_partial_fill_rests_remainder(book: Any) -> None:
    seed(book, ("s1", B, SELL, 101, 3))
    r = book.place("b1", A, BUY, 5, 102)
    assert r.status == PARTIALLY_FILLED
    assert r.rested
    assert (r.filled, r.remaining) == (3, 2)
    assert fills(r) == [("s1", 101, 3)]
    assert r.fills[0].maker_owner == B
    assert r.fills[0].maker_remaining == 0
    assert r.ask_deltas == {101: 0}
    assert r.bid_deltas == {102: 2}
    assert book.depth() == ([(102, 2)], [])


def test_gtc_full_fill_leaves_maker_remainder(book: Any) -> None:
    seed(book, ("s1", B, SELL, 101, 10))
    r = book.place("b1", A, BUY, 4, 101)
    assert r.status == FILLED
    assert not r.rested
    assert (r.filled, r.remaining) == (4, 0)
    assert fills(r) == [("s1", 101, 4)]
    assert r.fills[0].maker_remaining == 6
    assert r.ask_deltas == {101: 6}
    assert r.bid_deltas == {}
    assert book.depth() == ([], [(101, 6)])


def test_gtc_does_not_trade_through_its_limit(book: Any) -> None:
    seed(book, ("s1", B, SELL, 101, 2), ("s2", B, SELL, 103, 2))
    r = book.place("b1", A, BUY, 10, 102)
    assert fills(r) == [("s1", 101, 2)]
    assert r.status == PARTIALLY_FILLED
    assert book.depth() == ([(102, 8)], [(103, 2)])
    assert r.ask_deltas == {101: 0}


def test_gtc_sell_trades_at_maker_price_best_bid_first(book: Any) -> None:
    seed(book, ("b1", B, BUY, 98, 2), ("b2", B, BUY, 99, 2), ("b3", B, BUY, 97, 2))
    r = book.place("s1", A, SELL, 5, 98)
    assert fills(r) == [("b2", 99, 2), ("b1", 98, 2)]
    assert r.status == PARTIALLY_FILLED
    assert r.bid_deltas == {99: 0, 98: 0}
    assert r.ask_deltas == {98: 1}
    assert book.depth() == ([(97, 2)], [(98, 1)])


def test_gtc_without_cross_joins_existing_level(book: Any) -> None:
    seed(book, ("b0", B, BUY, 99, 2), ("s0", B, SELL, 101, 2))
    r = book.place("b1", A, BUY, 3, 99)
    assert r.status == NEW
    assert r.bid_deltas == {99: 5}
    assert r.ask_deltas == {}
    assert book.depth() == ([(99, 5)], [(101, 2)])


# -- IOC -----------------------------------------------------------------------------


def test_ioc_partial_fill_cancels_remainder(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", B, SELL, 101, 1), ("s3", B, SELL, 105, 9))
    r = book.place("b1", A, BUY, 6, 101, tif=IOC)
    assert r.status == CANCELED
    assert not r.rested
    assert (r.filled, r.remaining) == (3, 3)
    assert fills(r) == [("s1", 100, 2), ("s2", 101, 1)]
    assert r.ask_deltas == {100: 0, 101: 0}
    assert r.bid_deltas == {}
    assert book.depth() == ([], [(105, 9)])
    assert book.cancel("b1") is None


def test_ioc_full_fill(book: Any) -> None:
    seed(book, ("b0", B, BUY, 100, 5))
    r = book.place("s1", A, SELL, 5, 100, tif=IOC)
    assert r.status == FILLED
    assert r.bid_deltas == {100: 0}
    assert book.depth() == ([], [])


def test_ioc_without_cross_changes_nothing(book: Any) -> None:
    seed(book, ("s0", B, SELL, 101, 2))
    r = book.place("b1", A, BUY, 3, 100, tif=IOC)
    assert r.status == CANCELED
    assert (r.filled, r.remaining) == (0, 3)
    assert r.fills == []
    assert not r.changed
    assert book.depth() == ([], [(101, 2)])


# -- FOK -----------------------------------------------------------------------------


def test_fok_fills_across_levels(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", C, SELL, 101, 3), ("s3", B, SELL, 102, 3))
    r = book.place("b1", A, BUY, 5, 101, tif=FOK)
    assert r.status == FILLED
    assert fills(r) == [("s1", 100, 2), ("s2", 101, 3)]
    assert r.ask_deltas == {100: 0, 101: 0}
    assert book.depth() == ([], [(102, 3)])


def test_fok_exactly_fillable_partial_maker(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 7))
    r = book.place("b1", A, BUY, 6, 100, tif=FOK)
    assert r.status == FILLED
    assert r.fills[0].maker_remaining == 1
    assert book.depth() == ([], [(100, 1)])


def test_fok_rejected_when_short_changes_nothing(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", C, SELL, 101, 3), ("b0", B, BUY, 95, 1))
    before = book.depth()
    r = book.place("b1", A, BUY, 6, 101, tif=FOK)
    assert_rejected_untouched(book, r, 6, "FOK_UNFILLABLE", before)
    # The would-be makers keep their full size and priority.
    assert fills(book.place("b2", C, BUY, 1, 100)) == [("s1", 100, 1)]


def test_fok_rejected_when_liquidity_is_beyond_limit(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", B, SELL, 102, 10))
    before = book.depth()
    r = book.place("b1", A, BUY, 3, 101, tif=FOK)
    assert_rejected_untouched(book, r, 3, "FOK_UNFILLABLE", before)


def test_fok_on_empty_book_is_rejected(book: Any) -> None:
    r = book.place("b1", A, BUY, 1, 100, tif=FOK)
    assert_rejected_untouched(book, r, 1, "FOK_UNFILLABLE", ([], []))


def test_fok_market_fills_or_rejects(book: Any) -> None:
    seed(book, ("b0", B, BUY, 90, 2), ("b1", B, BUY, 80, 2))
    before = book.depth()
    r = book.place("s1", A, SELL, 5, None, tif=FOK)
    assert_rejected_untouched(book, r, 5, "FOK_UNFILLABLE", before)
    r = book.place("s2", A, SELL, 4, None, tif=FOK)
    assert r.status == FILLED
    assert fills(r) == [("b0", 90, 2), ("b1", 80, 2)]
    assert book.depth() == ([], [])


# -- POST_ONLY -----------------------------------------------------------------------


def test_post_only_rests_when_not_crossing(book: Any) -> None:
    seed(book, ("s0", B, SELL, 101, 2))
    r = book.place("b1", A, BUY, 3, 100, tif=POST_ONLY)
    assert r.status == NEW
    assert r.rested
    assert r.fills == []
    assert r.bid_deltas == {100: 3}
    assert r.ask_deltas == {}
    assert book.depth() == ([(100, 3)], [(101, 2)])


def test_post_only_rests_on_empty_opposite_side(book: Any) -> None:
    r = book.place("s1", A, SELL, 3, 100, tif=POST_ONLY)
    assert r.status == NEW
    assert book.depth() == ([], [(100, 3)])


@pytest.mark.parametrize(
    ("side", "price", "resting"),
    [
        (BUY, 101, (SELL, 101)),  # touching the best ask counts as crossing
        (BUY, 105, (SELL, 101)),
        (SELL, 99, (BUY, 99)),
        (SELL, 90, (BUY, 99)),
    ],
)
def test_post_only_rejected_when_crossing(
    book: Any, side: str, price: int, resting: tuple[str, int]
) -> None:
    seed(book, ("m", B, resting[0], resting[1], 4))
    before = book.depth()
    r = book.place("t", A, side, 2, price, tif=POST_ONLY)
    assert_rejected_untouched(book, r, 2, "WOULD_CROSS", before)


def test_post_only_rejected_even_if_crossing_order_is_own(book: Any) -> None:
    # The rule looks at the opposite best price only; STP does not make it passive.
    seed(book, ("s0", A, SELL, 100, 4))
    before = book.depth()
    r = book.place("b1", A, BUY, 2, 100, tif=POST_ONLY)
    assert_rejected_untouched(book, r, 2, "WOULD_CROSS", before)


def test_post_only_needs_a_price(book: Any) -> None:
    with pytest.raises(BookError):
        book.place("b1", A, BUY, 2, None, tif=POST_ONLY)


# -- MARKET --------------------------------------------------------------------------


def test_market_sweeps_levels_and_cancels_rest(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", C, SELL, 150, 3), ("b0", B, BUY, 90, 1))
    r = book.place("m1", A, BUY, 10, None)
    assert r.status == CANCELED
    assert not r.rested
    assert (r.filled, r.remaining) == (5, 5)
    assert fills(r) == [("s1", 100, 2), ("s2", 150, 3)]
    assert r.ask_deltas == {100: 0, 150: 0}
    assert r.bid_deltas == {}
    assert book.depth() == ([(90, 1)], [])


@pytest.mark.parametrize("tif", [GTC, IOC])
def test_market_never_rests(book: Any, tif: str) -> None:
    seed(book, ("b0", B, BUY, 90, 1))
    r = book.place("m1", A, SELL, 3, None, tif=tif)
    assert r.status == CANCELED
    assert (r.filled, r.remaining) == (1, 2)
    assert book.depth() == ([], [])
    assert book.cancel("m1") is None


def test_market_full_fill(book: Any) -> None:
    seed(book, ("b0", B, BUY, 90, 5))
    r = book.place("m1", A, SELL, 3, None)
    assert r.status == FILLED
    assert r.bid_deltas == {90: 2}


@pytest.mark.parametrize("side", [BUY, SELL])
def test_market_on_empty_book(book: Any, side: str) -> None:
    r = book.place("m1", A, side, 3, None)
    assert r.status == CANCELED
    assert (r.filled, r.remaining) == (0, 3)
    assert r.fills == []
    assert not r.rested
    assert not r.changed
    assert book.depth() == ([], [])


# -- price-time priority -------------------------------------------------------------


def test_fifo_within_level(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", C, SELL, 100, 2), ("s3", B, SELL, 100, 2))
    r = book.place("b1", A, BUY, 3, 100)
    assert fills(r) == [("s1", 100, 2), ("s2", 100, 1)]
    assert r.ask_deltas == {100: 3}
    r = book.place("b2", A, BUY, 2, 100)
    assert fills(r) == [("s2", 100, 1), ("s3", 100, 1)]


def test_partial_fill_keeps_time_priority(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 5), ("s2", C, SELL, 100, 5))
    book.place("b1", A, BUY, 2, 100)
    r = book.place("b2", A, BUY, 4, 100)
    assert fills(r) == [("s1", 100, 3), ("s2", 100, 1)]


def test_better_price_beats_earlier_time(book: Any) -> None:
    seed(book, ("s1", B, SELL, 101, 2), ("s2", C, SELL, 100, 2))
    assert fills(book.place("b1", A, BUY, 1, 101)) == [("s2", 100, 1)]
    seed(book, ("b1", B, BUY, 98, 2), ("b2", C, BUY, 99, 2))
    assert fills(book.place("s9", A, SELL, 3, 98)) == [("b2", 99, 2), ("b1", 98, 1)]


def test_requeued_order_goes_to_back(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", C, SELL, 100, 2))
    book.cancel("s1")
    book.add_resting("s1b", B, SELL, 100, 2)
    assert fills(book.place("b1", A, BUY, 3, 100)) == [("s2", 100, 2), ("s1b", 100, 1)]


def test_resting_order_placed_later_queues_behind(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 1))
    book.place("s2", C, SELL, 1, 100)
    assert fills(book.place("b1", A, BUY, 2, 100)) == [("s1", 100, 1), ("s2", 100, 1)]


# -- self-trade prevention -----------------------------------------------------------


def test_stp_cancels_own_maker_and_continues(book: Any) -> None:
    seed(book, ("s1", A, SELL, 100, 2), ("s2", B, SELL, 100, 3))
    r = book.place("b1", A, BUY, 3, 100)
    assert r.stp_canceled == [("s1", 2)]
    assert fills(r) == [("s2", 100, 3)]
    assert r.status == FILLED
    assert r.ask_deltas == {100: 0}
    assert book.depth() == ([], [])
    assert book.cancel("s1") is None


def test_stp_in_middle_of_level(book: Any) -> None:
    seed(
        book,
        ("s1", B, SELL, 100, 1),
        ("s2", A, SELL, 100, 2),
        ("s3", C, SELL, 100, 2),
        ("s4", B, SELL, 100, 4),
    )
    r = book.place("b1", A, BUY, 3, 100)
    assert fills(r) == [("s1", 100, 1), ("s3", 100, 2)]
    assert r.stp_canceled == [("s2", 2)]
    assert r.status == FILLED
    assert r.ask_deltas == {100: 4}
    assert book.depth() == ([], [(100, 4)])


def test_stp_leaves_own_orders_behind_the_fill_point(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", A, SELL, 100, 2), ("s3", A, SELL, 101, 2))
    r = book.place("b1", A, BUY, 2, 101)
    assert fills(r) == [("s1", 100, 2)]
    assert r.stp_canceled == []
    assert r.ask_deltas == {100: 2}
    assert book.depth() == ([], [(100, 2), (101, 2)])


def test_stp_clears_whole_level_then_trades_deeper(book: Any) -> None:
    seed(book, ("b1", A, BUY, 100, 1), ("b2", A, BUY, 100, 2), ("b3", B, BUY, 99, 5))
    r = book.place("s1", A, SELL, 4, 99, tif=IOC)
    assert r.stp_canceled == [("b1", 1), ("b2", 2)]
    assert fills(r) == [("b3", 99, 4)]
    assert r.bid_deltas == {100: 0, 99: 1}
    assert r.ask_deltas == {}
    assert book.depth() == ([(99, 1)], [])


def test_stp_only_own_liquidity_ioc(book: Any) -> None:
    seed(book, ("s1", A, SELL, 100, 3))
    r = book.place("b1", A, BUY, 2, 100, tif=IOC)
    assert r.status == CANCELED
    assert r.fills == []
    assert r.stp_canceled == [("s1", 3)]
    assert r.ask_deltas == {100: 0}
    assert r.changed
    assert book.depth() == ([], [])


def test_stp_then_rest_at_same_price_leaves_book_uncrossed(book: Any) -> None:
    seed(book, ("s1", A, SELL, 100, 3))
    r = book.place("b1", A, BUY, 2, 100)
    assert r.status == NEW
    assert r.stp_canceled == [("s1", 3)]
    assert r.ask_deltas == {100: 0}
    assert r.bid_deltas == {100: 2}
    assert book.depth() == ([(100, 2)], [])


def test_stp_market_order(book: Any) -> None:
    seed(book, ("s1", A, SELL, 100, 3), ("s2", C, SELL, 120, 1))
    r = book.place("m1", A, BUY, 5, None)
    assert r.stp_canceled == [("s1", 3)]
    assert fills(r) == [("s2", 120, 1)]
    assert r.status == CANCELED
    assert book.depth() == ([], [])


def test_fok_ignores_own_liquidity_and_rejects_without_stp(book: Any) -> None:
    seed(book, ("s1", A, SELL, 100, 5), ("s2", B, SELL, 100, 2))
    before = book.depth()
    r = book.place("b1", A, BUY, 3, 100, tif=FOK)
    assert_rejected_untouched(book, r, 3, "FOK_UNFILLABLE", before)
    assert book.level_qty(SELL, 100) == 7


def test_fok_fill_cancels_own_maker_it_meets(book: Any) -> None:
    seed(book, ("s1", A, SELL, 100, 5), ("s2", B, SELL, 100, 2), ("s3", A, SELL, 100, 1))
    r = book.place("b1", A, BUY, 2, 100, tif=FOK)
    assert r.status == FILLED
    assert r.stp_canceled == [("s1", 5)]
    assert fills(r) == [("s2", 100, 2)]
    # s3 sits after the point where the order was done, so it survives.
    assert r.ask_deltas == {100: 1}
    assert book.depth() == ([], [(100, 1)])


def test_fok_fillable_by_others_even_with_own_orders_in_between(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 1), ("s2", A, SELL, 101, 9), ("s3", C, SELL, 102, 1))
    r = book.place("b1", A, BUY, 2, 102, tif=FOK)
    assert r.status == FILLED
    assert fills(r) == [("s1", 100, 1), ("s3", 102, 1)]
    assert r.stp_canceled == [("s2", 9)]
    assert r.ask_deltas == {100: 0, 101: 0, 102: 0}


# -- cancel / add_resting ------------------------------------------------------------


def test_cancel_resting_returns_order_and_level_total(book: Any) -> None:
    seed(book, ("b1", A, BUY, 100, 2), ("b2", B, BUY, 100, 3), ("b3", B, BUY, 99, 1))
    got = book.cancel("b1")
    assert got is not None
    order, level_total = got
    assert (order.order_id, order.owner, order.side, order.price, order.qty) == (
        "b1",
        A,
        BUY,
        100,
        2,
    )
    assert level_total == 3
    assert book.depth() == ([(100, 3), (99, 1)], [])
    order, level_total = book.cancel("b3")
    assert level_total == 0
    assert book.depth() == ([(100, 3)], [])


def test_cancel_partially_filled_reports_remaining(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 5))
    book.place("b1", A, BUY, 2, 100)
    order, level_total = book.cancel("s1")
    assert order.qty == 3
    assert level_total == 0
    assert book.best_ask() is None


def test_cancel_unknown_or_gone(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 1))
    assert book.cancel("nope") is None
    book.place("b1", A, BUY, 1, 100)  # fills s1 completely
    assert book.cancel("s1") is None
    assert book.cancel("b1") is None
    book.add_resting("s2", B, SELL, 100, 1)
    assert book.cancel("s2") is not None
    assert book.cancel("s2") is None
    assert book.depth() == ([], [])


def test_cancelled_order_is_not_matched(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 1), ("s2", C, SELL, 100, 1))
    book.cancel("s1")
    assert fills(book.place("b1", A, BUY, 2, 100, tif=IOC)) == [("s2", 100, 1)]


def test_add_resting_does_not_match_and_builds_depth(book: Any) -> None:
    seed(book, ("b1", A, BUY, 100, 2), ("b2", B, BUY, 100, 3), ("s1", C, SELL, 105, 4))
    assert book.depth() == ([(100, 5)], [(105, 4)])
    assert book.level_qty(BUY, 100) == 5
    assert book.level_qty(SELL, 100) == 0
    assert book.level_qty(SELL, 105) == 4


def test_add_resting_duplicate_id(book: Any) -> None:
    seed(book, ("x", A, BUY, 100, 2))
    with pytest.raises(BookError):
        book.add_resting("x", B, SELL, 105, 1)
    assert book.depth() == ([(100, 2)], [])


def test_id_of_a_finished_order_can_be_reused(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 1))
    book.place("b1", A, BUY, 1, 100)
    r = book.place("s1", B, SELL, 2, 101)
    assert r.status == NEW


# -- depth ---------------------------------------------------------------------------


def test_depth_levels_best_first(book: Any) -> None:
    seed(
        book,
        ("b1", A, BUY, 98, 1),
        ("b2", A, BUY, 99, 2),
        ("b3", B, BUY, 97, 3),
        ("b4", C, BUY, 99, 4),
        ("s1", A, SELL, 103, 1),
        ("s2", B, SELL, 101, 2),
        ("s3", C, SELL, 102, 3),
    )
    assert book.depth() == ([(99, 6), (98, 1), (97, 3)], [(101, 2), (102, 3), (103, 1)])
    assert book.depth(None) == book.depth()
    assert book.depth(2) == ([(99, 6), (98, 1)], [(101, 2), (102, 3)])
    assert book.depth(1) == ([(99, 6)], [(101, 2)])
    assert book.depth(0) == ([], [])
    assert book.depth(3) == book.depth()
    assert book.depth(50) == book.depth()
    assert (book.best_bid(), book.best_ask()) == (99, 101)


def test_depth_of_empty_book(book: Any) -> None:
    assert book.depth() == ([], [])
    assert book.depth(5) == ([], [])
    assert book.best_bid() is None
    assert book.best_ask() is None


# -- sweep ---------------------------------------------------------------------------


def test_sweep_skips_owner_and_respects_limit(book: Any) -> None:
    seed(
        book,
        ("s1", B, SELL, 100, 2),
        ("s2", A, SELL, 100, 5),
        ("s3", C, SELL, 101, 3),
        ("s4", B, SELL, 103, 10),
    )
    assert book.sweep(BUY, 4, 101, A) == (4, 2 * 100 + 2 * 101)
    assert book.sweep(BUY, 10, 101, A) == (5, 2 * 100 + 3 * 101)
    assert book.sweep(BUY, 10, 101, B) == (8, 5 * 100 + 3 * 101)
    assert book.sweep(BUY, 20, None, A) == (15, 2 * 100 + 3 * 101 + 10 * 103)
    assert book.sweep(BUY, 1, 99, C) == (0, 0)
    assert book.sweep(SELL, 1, None, C) == (0, 0)
    assert book.depth() == ([], [(100, 7), (101, 3), (103, 10)])


def test_sweep_sell_side(book: Any) -> None:
    seed(book, ("b1", B, BUY, 99, 2), ("b2", C, BUY, 98, 2))
    assert book.sweep(SELL, 3, 98, A) == (3, 2 * 99 + 98)
    assert book.sweep(SELL, 3, 99, A) == (2, 2 * 99)


def test_resting_within_qty_and_limit() -> None:
    book = seed(
        OrderBook(),
        ("s1", B, SELL, 100, 2),
        ("s2", A, SELL, 100, 5),
        ("s3", C, SELL, 101, 3),
        ("s4", B, SELL, 103, 10),
        ("b1", C, BUY, 99, 4),
    )

    def ids(side: str, qty: int, price: int | None) -> list[str]:
        return [o.order_id for o in book.resting_within(side, qty, price)]

    assert ids(BUY, 2, 101) == ["s1"]
    assert ids(BUY, 3, 101) == ["s1", "s2"]
    assert ids(BUY, 100, 101) == ["s1", "s2", "s3"]
    assert ids(BUY, 100, None) == ["s1", "s2", "s3", "s4"]
    assert ids(BUY, 1, 99) == []
    assert ids(SELL, 1, 99) == ["b1"]
    assert ids(SELL, 1, 100) == []
    # What a match meets is among them.
    result = book.place("t1", A, BUY, 8, 101, GTC)
    met = {f.maker_id for f in result.fills} | {i for i, _ in result.stp_canceled}
    assert met <= {"s1", "s2", "s3"}


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.place("n1", A, "buy", 1, 100),
        lambda b: b.place("n1", A, "HOLD", 1, 100),
        lambda b: b.place("n1", A, None, 1, 100),
        lambda b: b.place("n1", A, BUY, 0, 100),
        lambda b: b.place("n1", A, SELL, -3, 100),
        lambda b: b.place("n1", A, SELL, 0, None),
        lambda b: b.place("r1", A, SELL, 1, 200),  # duplicate of a resting id
        lambda b: b.place("r1", B, BUY, 1, None, tif=IOC),
        lambda b: b.place("n1", A, SELL, 1, None, tif=POST_ONLY),
        lambda b: b.place("n1", A, BUY, 1, 100, tif="gtc"),
        lambda b: b.place("n1", A, BUY, 1, 100, tif="DAY"),
        lambda b: b.place("n1", A, BUY, 1, None, tif=None),
        lambda b: b.add_resting("r1", A, BUY, 90, 1),
        lambda b: b.add_resting("n1", A, "buy", 90, 1),
        lambda b: b.add_resting("n1", A, SELL, 110, 0),
        lambda b: b.add_resting("n1", A, SELL, 110, -2),
    ],
    ids=[
        "lowercase-side",
        "unknown-side",
        "none-side",
        "zero-qty",
        "negative-qty",
        "zero-qty-market",
        "duplicate-id",
        "duplicate-id-market",
        "post-only-market",
        "lowercase-tif",
        "unknown-tif",
        "none-tif",
        "add-resting-duplicate",
        "add-resting-unknown-side",
        "add-resting-zero-qty",
        "add-resting-negative-qty",
    ],
)
def test_bad_input_raises_and_changes_nothing(book: Any, call: Callable[[Any], Any]) -> None:
    seed(book, ("r1", B, BUY, 100, 2), ("r2", C, SELL, 101, 2))
    before = book.depth()
    with pytest.raises(BookError):
        call(book)
    assert book.depth() == before


# -- rekey ---------------------------------------------------------------------------


def test_rekey_keeps_place_in_queue(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 2))
    book.place("tmp", C, SELL, 3, 100)
    book.rekey("tmp", "s2")
    assert book.cancel("tmp") is None
    assert book.depth() == ([], [(100, 5)])
    assert fills(book.place("b1", A, BUY, 4, 100)) == [("s1", 100, 2), ("s2", 100, 2)]
    order, total = book.cancel("s2")
    assert (order.order_id, order.qty, total) == ("s2", 1, 0)


def test_rekey_renamed_order_is_still_subject_to_stp(book: Any) -> None:
    book.place("tmp", A, BUY, 3, 99)
    book.rekey("tmp", "b1")
    r = book.place("s1", A, SELL, 1, 99, tif=IOC)
    assert r.stp_canceled == [("b1", 3)]


@pytest.mark.parametrize(
    ("old_id", "new_id"),
    [
        ("nope", "x"),  # unknown id
        ("s1", "x"),  # s1 is not the newest order at 100
        ("s2", "s3"),  # s3 is on the book: the rename would orphan it
        ("s2", "s2"),
    ],
)
def test_refused_rekey_changes_nothing(book: Any, old_id: str, new_id: str) -> None:
    seed(book, ("s1", B, SELL, 100, 2), ("s2", C, SELL, 100, 3), ("s3", B, SELL, 101, 1))
    with pytest.raises(BookError):
        book.rekey(old_id, new_id)
    assert book.depth() == ([], [(100, 5), (101, 1)])
    r = book.place("b1", A, BUY, 6, 101)
    assert fills(r) == [("s1", 100, 2), ("s2", 100, 3), ("s3", 101, 1)]
    assert book.depth() == ([], [])


def test_rekey_onto_id_of_finished_order(book: Any) -> None:
    seed(book, ("s1", B, SELL, 100, 1))
    book.place("b1", A, BUY, 1, 100)
    book.place("tmp", C, SELL, 2, 101)
    book.rekey("tmp", "s1")
    order, total = book.cancel("s1")
    assert (order.order_id, order.owner, order.price, order.qty, total) == ("s1", C, 101, 2, 0)


@pytest.mark.parametrize("tif", ["GTC", "POST_ONLY"])
def test_time_in_force_is_compared_by_value_not_identity(tif):
    """Callers pass strings built elsewhere (enum members, parsed JSON), not this
    module's constants: a resting order must rest whatever string object names it."""
    from trading.engine import OrderBook

    book = OrderBook()
    built = "".join(list(tif))
    assert built == tif and built is not tif
    result = book.place(1, "a", "BUY", 5, 100, built)
    assert result.rested and result.status == "NEW"
    assert book.depth() == ([(100, 5)], [])


# -- reduce-only makers (the engine only: the reference book has no positions) --------


def _positions(**sizes: int) -> dict[Any, int]:
    return sizes


def test_a_reduce_only_maker_fills_only_what_shrinks_its_owners_position() -> None:
    book = OrderBook()
    book.add_resting("a1", A, SELL, 100, 10, reduce_only=True)
    book.add_resting("b1", B, SELL, 101, 5)
    # A is long 4: of its 10 only 4 may fill; the rest leaves the book.
    r = book.place("t", C, BUY, 8, 101, GTC, position=_positions(alice=4))
    assert [(f.maker_id, f.qty) for f in r.fills] == [("a1", 4), ("b1", 4)]
    assert r.reduce_only_canceled == [("a1", 6)]
    assert r.status == FILLED and "a1" not in book.orders
    assert r.ask_deltas == {100: 0, 101: 1}


def test_a_reduce_only_maker_of_a_flat_or_opposite_position_leaves_unfilled() -> None:
    for size in (0, -3):
        book = OrderBook()
        book.add_resting("a1", A, SELL, 100, 10, reduce_only=True)
        r = book.place("t", C, BUY, 5, 100, IOC, position=_positions(alice=size))
        assert r.fills == [] and r.reduce_only_canceled == [("a1", 10)]
        assert r.status == CANCELED and book.best_ask() is None


def test_an_owners_earlier_fills_in_the_match_count_against_its_reduce_only_orders() -> None:
    book = OrderBook()
    book.add_resting("a-plain", A, SELL, 100, 3)
    book.add_resting("a-ro", A, SELL, 101, 5, reduce_only=True)
    # Long 5: the plain sell takes 3 of it; the reduce-only order may fill 2 more.
    r = book.place("t", C, BUY, 10, 102, IOC, position=_positions(alice=5))
    assert [(f.maker_id, f.qty) for f in r.fills] == [("a-plain", 3), ("a-ro", 2)]
    assert r.reduce_only_canceled == [("a-ro", 3)]


def test_a_reduce_only_buy_maker_shrinks_a_short() -> None:
    book = OrderBook()
    book.add_resting("a1", A, BUY, 100, 10, reduce_only=True)
    r = book.place("t", C, SELL, 10, 100, IOC, position=_positions(alice=-6))
    assert [(f.maker_id, f.qty) for f in r.fills] == [("a1", 6)]
    assert r.reduce_only_canceled == [("a1", 4)]


def test_fok_counts_a_reduce_only_maker_only_for_what_it_may_fill() -> None:
    book = OrderBook()
    book.add_resting("a1", A, SELL, 100, 10, reduce_only=True)
    r = book.place("t", C, BUY, 5, 100, FOK, position=_positions(alice=4))
    assert r.status == REJECTED and r.reject_reason == "FOK_UNFILLABLE"
    assert book.level_qty(SELL, 100) == 10  # nothing changed
    assert book.sweep(BUY, 5, 100, C, _positions(alice=4)) == (4, 400)
    r = book.place("t", C, BUY, 4, 100, FOK, position=_positions(alice=4))
    assert r.status == FILLED and r.reduce_only_canceled == [("a1", 6)]


def test_a_resting_order_keeps_its_reduce_only_mark() -> None:
    book = OrderBook()
    r = book.place("a1", A, SELL, 10, 100, GTC, reduce_only=True)
    assert r.rested and book.orders["a1"].reduce_only
    # Without positions to go by, reduce-only makers fill as any other.
    r = book.place("t", C, BUY, 10, 100, IOC)
    assert [(f.maker_id, f.qty) for f in r.fills] == [("a1", 10)]
    assert not r.reduce_only_canceled


def test_an_owners_reduce_only_orders_are_listed_while_they_rest() -> None:
    book = OrderBook()
    book.add_resting("a1", A, SELL, 100, 5, reduce_only=True)
    book.add_resting("a2", A, SELL, 101, 5)
    book.place("a3", A, SELL, 5, 102, GTC, reduce_only=True)
    book.rekey("a3", "a3-stored")
    assert [o.order_id for o in book.reduce_only_resting(A)] == ["a1", "a3-stored"]
    book.place("t", C, BUY, 5, 100, IOC)  # fills a1 whole
    book.cancel("a3-stored")
    assert book.reduce_only_resting(A) == [] and book.reduce_only_resting(B) == []
