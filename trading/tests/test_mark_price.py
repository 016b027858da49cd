"""The mark of perps and futures: impact prices over the impact notional, a basis
average that starts at zero and learns only from deep books, the index where the book
is thin, and the mark band. The worked examples of docs/risk.md, with the same numbers.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from trading import pricing
from trading.models import Book, FundingSample, Market
from trading.orders.cancel import order_cancel, orders_cancel_all
from trading.orders.place import order_place
from trading.services.funding import funding_sample
from trading.services.prices import impact_prices_get, index_set, marks_refresh
from trading.tests.factories import MarketFactory, UserFactory, call_market, fund

D = Decimal
pytestmark = pytest.mark.django_db

INDEX = D("64000")
TICK = D("0.5")
BAND = D("0.02")


# -- the formulas -----------------------------------------------------------------------


def test_the_impact_notional_is_200_usdc_of_margin_at_the_maximum_leverage():
    assert pricing.impact_notional(D("20")) == D("4000")
    assert pricing.impact_notional(D("50")) == D("10000")


def test_the_impact_price_is_the_average_price_of_the_whole_notional():
    # Selling 4,000 USDC into bids 0.04 @ 64,000 and 1 @ 60,000: 2,560 at 64,000
    # (0.04 BTC), 1,440 at 60,000 (0.024 BTC); 4,000 / 0.064 = 62,500.
    bids = [(D("64000"), D("0.04")), (D("60000"), D("1"))]
    assert pricing.impact_price(bids, D("4000")) == D("62500")
    # The thin quote of the attack (0.001 BTC, 72 USDC) cannot take 4,000: no price.
    assert pricing.impact_price([(D("72000"), D("0.001"))], D("4000")) is None
    assert pricing.impact_price([], D("4000")) is None


def test_the_basis_average_starts_at_zero():
    # One deep sample of 305 weighs 2/61 of it: 10, not 305.
    assert pricing.ema(None, D("305")) == D("10")
    assert pricing.ema(D("10"), D("305")) == D("19.672131147541")
    # One sample of the attack's mid (72,000.25 - 64,000) would have set the average to
    # 8,000.25 outright; seeded from zero it is 2/61 of it (and the mark never feeds it
    # a thin book's mid anyway).
    assert pricing.ema(None, D("8000.25")) == D("262.303278688525")


def test_the_basis_sample_is_the_impact_mid_less_the_index():
    assert pricing.basis_sample(INDEX, D("64300"), D("64310")) == D("305")


def mark(basis, impact_bid, impact_ask, index=INDEX, band=BAND):
    return pricing.futures_mark(
        index=index,
        basis_avg=basis,
        impact_bid=impact_bid,
        impact_ask=impact_ask,
        band=band,
        tick=TICK,
    )


def test_a_thin_book_is_marked_at_the_index():
    # The attack: the old rule (median of index + basis and the best quotes) gave 72,000.
    assert mark(None, None, None) == INDEX
    # One side deep enough is not enough: the bare index, not index + basis (64,030).
    assert mark(D("30"), D("63990"), None) == INDEX
    assert mark(D("30"), None, D("64010")) == INDEX


def test_a_deep_book_is_marked_at_the_index_plus_the_basis_average():
    assert mark(D("30"), D("63990"), D("64050")) == D("64030")
    # A deep book at a premium, fresh basis 10: 64,010, not the impact bid 64,300.
    assert mark(D("10"), D("64300"), D("64310")) == D("64010")


def test_the_mark_stays_within_the_band_of_the_index():
    # 64,000 + 1,400 = 65,400 > 64,000 x 1.02 = 65,280.
    assert mark(D("1400"), D("66000"), D("66010")) == D("65280")
    assert mark(D("-1400"), D("61000"), D("61010")) == D("62720")
    # The band's ends round inwards to the tick: 64,000.3 x 1.02 = 65,280.306 -> 65,280;
    # 64,000.3 x 0.98 = 62,720.294 -> 62,720.5.
    assert mark(D("2000"), D("70000"), D("70010"), index=D("64000.3")) == D("65280")
    assert mark(D("-2000"), D("60000"), D("60010"), index=D("64000.3")) == D("62720.5")
    # Thin, the index itself is rounded to the tick.
    assert mark(None, None, None, index=D("64000.3")) == D("64000.5")


# -- through the clock, against real orders ----------------------------------------------


@pytest.fixture
def perp():
    # A price band of 50% lets the attack's orders in: the mark must hold on its own,
    # whatever band the order path applies.
    m = MarketFactory(max_leverage=D("20"), price_band=D("0.5"))
    index_set(underlying="BTC", price=INDEX)
    Book.objects.filter(market=m).update(mark_price=INDEX)
    return m


def place(user, side, qty, price, market="BTC-PERP"):
    body, _ = order_place(
        trader=user,
        market=market,
        mode="PAPER",
        side=side,
        type="LIMIT",
        price=D(price),
        qty=D(qty),
    )
    return body


def cancel_all(user) -> None:
    orders_cancel_all(trader=user, mode="PAPER", market="BTC-PERP")


def book_of(market) -> Book:
    return Book.objects.get(market=market, mode="PAPER")


@pytest.fixture
def maker():
    u = UserFactory()
    fund(u, "1000000")
    return u


def test_two_dust_quotes_do_not_move_the_mark(perp):
    attacker = UserFactory()
    fund(attacker, "1000")
    bid = place(attacker, "BUY", "0.001", "72000")
    ask = place(attacker, "SELL", "0.001", "72000.5")
    for _ in range(3):
        marks_refresh()
        book = book_of(perp)
        assert book.mark_price == INDEX
        assert not book.basis_avg  # a thin book is never sampled
    assert Market.objects.get(pk=perp.pk).mark_price == INDEX  # the REAL book's own
    order_cancel(trader=attacker, order_id=bid["id"])
    order_cancel(trader=attacker, order_id=ask["id"])
    marks_refresh()
    book = book_of(perp)
    assert book.mark_price == INDEX
    assert abs(book.basis_avg or 0) < D("0.01")


def test_a_deep_bid_with_a_dust_ask_is_still_a_thin_book(perp):
    attacker = UserFactory()
    fund(attacker, "100000")
    place(attacker, "BUY", "0.1", "67000")  # 6,700 USDC: deep enough
    place(attacker, "SELL", "0.001", "67000.5")  # 67 USDC: not
    assert impact_prices_get(books=[book_of(perp)])[(perp.pk, "PAPER")] == (D("67000"), None)
    marks_refresh()
    assert book_of(perp).mark_price == INDEX
    assert not book_of(perp).basis_avg


def test_impact_prices_read_the_remaining_quantity_of_the_orders_the_notional_reaches(perp, maker):
    taker = UserFactory()
    fund(taker, "100000")
    place(maker, "BUY", "0.05", "64000")
    place(taker, "SELL", "0.01", "64000")  # leaves 0.04 of the maker's bid
    place(maker, "BUY", "0.5", "60000")
    place(maker, "BUY", "0.5", "60000")
    place(maker, "BUY", "1", "55000")  # beyond the notional
    book = book_of(perp)
    assert impact_prices_get(books=[book]) == {(perp.pk, "PAPER"): (D("62500"), None)}


def test_impact_prices_of_every_book_in_one_statement(perp, maker, django_assert_num_queries):
    future = MarketFactory(
        symbol="BTC-FUT", kind="FUTURE", expiry_at=timezone.now() + timedelta(days=30)
    )
    place(maker, "BUY", "1", "64300")
    place(maker, "SELL", "1", "64310")
    place(maker, "SELL", "1", "64400", market="BTC-FUT")
    books = list(Book.objects.select_related("market").filter(market__in=[perp, future]))
    with django_assert_num_queries(1):
        prices = impact_prices_get(books=books)
    assert prices == {
        (perp.pk, "PAPER"): (D("64300"), D("64310")),
        (perp.pk, "REAL"): (None, None),
        (future.pk, "PAPER"): (None, D("64400")),
        (future.pk, "REAL"): (None, None),
    }


def test_a_deep_book_at_a_premium_moves_the_mark_toward_it_within_the_band(perp, maker):
    place(maker, "BUY", "1", "64300")
    place(maker, "SELL", "1", "64310")
    marks_refresh()
    book = book_of(perp)
    # impact mid 64,305: basis sample 305, average 2/61 x 305 = 10; mark 64,010.
    assert book.basis_avg == D("10")
    assert book.mark_price == D("64010")
    # Deeper still at +3.1%: one tick of it moves the mark by 0.1%.
    cancel_all(maker)
    place(maker, "BUY", "1", "66000")
    place(maker, "SELL", "1", "66010")
    marks_refresh()
    book = book_of(perp)
    # 10 + 2/61 x (2,005 - 10) = 75.41: 64,075.41 on the tick.
    assert book.basis_avg == D("75.409836065574")
    assert book.mark_price == D("64075.5")
    # Held there for a minute, the mark follows it as far as the band and no further.
    marks = []
    for _ in range(60):
        marks_refresh()
        marks.append(book_of(perp).mark_price)
    assert marks == sorted(marks) and max(marks) == D("65280")
    # At the band once 64,000 + basis rounds to 65,280: basis >= 1,279.75, that is
    # 2,005 - 1,929.59 x (59/61)^k >= 1,279.75 after k = 30 more ticks.
    assert marks.index(D("65280")) == 29


def test_the_funding_premium_of_a_thin_book_is_zero(perp, maker):
    attacker = UserFactory()
    fund(attacker, "1000")
    place(attacker, "BUY", "0.001", "72000")
    place(attacker, "SELL", "0.001", "72000.5")
    now = timezone.now()
    assert funding_sample(now) == 2
    assert FundingSample.objects.get(book=book_of(perp), at=now).premium == 0
    # The same book made deep at a premium: (64,300 - 64,000) / 64,000.
    cancel_all(attacker)
    place(maker, "BUY", "1", "64300")
    place(maker, "SELL", "1", "64310")
    later = now + timedelta(minutes=1)
    index_set(underlying="BTC", price=INDEX, at=later)
    funding_sample(later)
    assert FundingSample.objects.get(book=book_of(perp), at=later).premium == D("0.0046875")


def test_quotes_do_not_move_an_option_mark_or_its_iv(perp, maker):
    option = call_market("BTC-C64K")
    now = timezone.now()
    marks_refresh(now)
    before = book_of(option).mark_price
    assert before > 0
    # A bid and an ask above the model's price (as far as the option's order band lets
    # a bid go): the mark is Black-Scholes at the staff-set IV, which no order moves.
    place(maker, "BUY", "0.01", str(before + 50), market="BTC-C64K")
    place(maker, "SELL", "0.01", str(before + 55), market="BTC-C64K")
    marks_refresh(now)
    assert book_of(option).mark_price == before
    assert Market.objects.get(pk=option.pk).mark_iv == D("0.5")
