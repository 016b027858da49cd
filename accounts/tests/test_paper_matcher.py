"""A paper reset writes the account's books: with matchers, the matcher of its first
book carries it out, so that the matcher's in-memory book stays its own."""

from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection

from accounts.services.paper import paper_reset_submit
from trading import matcher
from trading.invariants import check_invariants
from trading.models import Book, Order
from trading.services import books
from trading.tests.factories import MarketFactory, UserFactory, fund
from trading.tests.test_matcher import _leases, _order, _wait, remote  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not getattr(settings, "REDIS_URL", None),
        reason="matchers hold PostgreSQL leases and take requests over Redis",
    ),
]


def test_a_paper_reset_is_carried_out_by_the_matcher_of_the_accounts_book(remote):  # noqa: F811
    market = MarketFactory()
    book = Book.objects.get(market=market, mode="PAPER")
    alice, bob = UserFactory(), UserFactory()
    fund(alice, "100000")
    fund(bob, "100000")
    remote()
    _wait(lambda: book.pk in _leases(), "the matcher's lease")
    rests, _ = matcher.order_submit(trader=alice, **_order(price=Decimal("63000")))
    books.engine_cache_clear()

    body = paper_reset_submit(trader=alice)

    assert body["canceledOrderIds"] == [rests["id"]]
    assert Order.objects.get(pk=rests["id"]).status == "CANCELED"
    # Carried out in the matcher: this process never took the book.
    assert book.pk not in books._cache
    # The matcher's book has the order gone: a sell at its price rests.
    sell, _ = matcher.order_submit(trader=bob, **_order(side="SELL", price=Decimal("63000")))
    assert sell["status"] == "NEW"
    # An account with no book is reset here, at once.
    assert paper_reset_submit(trader=alice)["canceledOrderIds"] == []
    assert check_invariants() == []
