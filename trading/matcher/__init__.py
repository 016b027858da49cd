"""The matcher: the owner of the books, through which the API places and cancels orders.

Where it runs is a setting (`MATCHER`):

- `embedded` (the one-command run, and wherever there is no Redis): in the process
  that received the request, whose threads share each book's transactions (group
  commit, `trading.orders.place`);
- `redis`: in `manage.py runmatcher` processes, each holding a lease on its books
  (`trading.matcher.server`); the API hands each request to its book's matcher over
  Redis and waits for the answer (`trading.matcher.redis_queue`).

Either way a request ends in the same stages (`trading.matcher.requests.request_run` →
`trading.orders.place.orders_place_each` → `_place_together`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from itertools import groupby
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser

from dexsite.errors import ExchangeError, NotFound
from trading.matcher.requests import (
    CANCEL,
    CANCEL_ALL,
    DELIST,
    LIQUIDATE,
    PLACE,
    SETTLE,
    TRIGGER,
    MatcherRequest,
    Outcomes,
)

if TYPE_CHECKING:
    from trading.models import Liquidation, Market, Settlement

log = logging.getLogger("matcher")


def remote() -> bool:
    return settings.MATCHER == "redis"


def order_submit(*, trader: AbstractBaseUser, **order: Any) -> tuple[dict[str, Any], bool]:
    """Place one order (`order_place`'s arguments): (the order, created?)."""
    if not remote():
        from trading.orders.place import order_place

        return order_place(trader=trader, **order)
    (outcome,) = _send(order["market"], order["mode"], MatcherRequest(PLACE, trader, [order]))
    if isinstance(outcome, ExchangeError):
        raise outcome
    return outcome


def orders_submit(
    *, trader: AbstractBaseUser, orders: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], bool] | ExchangeError]:
    """Place a list of orders, each on its own (`orders_place_many`): the orders of one
    book go to its matcher as one request, the books' requests in the list's order."""
    if not remote():
        from trading.orders.place import orders_place_many

        return orders_place_many(trader=trader, orders=orders)
    results: list[Any] = []
    for (symbol, mode), run in groupby(orders, key=lambda o: (o["market"], o["mode"])):
        run = list(run)
        try:
            results += _send(symbol, mode, MatcherRequest(PLACE, trader, run))
        except ExchangeError as e:
            results += [e] * len(run)
    return results


def order_cancel_submit(*, trader: AbstractBaseUser, order_id: int) -> dict[str, Any]:
    """Cancel one of a trader's orders, by its book's matcher (with the placings and
    cancels waiting there), or embedded, with those that this process's threads send
    the book at the same time (`order_cancel_on`)."""
    from trading.models import Order

    book = (
        Order.objects.filter(pk=order_id, trader=trader)
        .values_list("market__symbol", "mode")
        .first()
    )
    if book is None:
        raise NotFound("order")
    symbol, mode = book
    if not remote():
        from trading.orders.place import order_cancel_on

        return order_cancel_on(trader=trader, order_id=order_id, market=symbol, mode=mode)
    request = MatcherRequest(
        CANCEL, trader, order_id=order_id, args={"market": symbol, "mode": mode}
    )
    (order,) = _send(symbol, mode, request)
    return order


def orders_cancel_all_submit(
    *,
    trader: AbstractBaseUser,
    mode: str | None,
    market: str | None,
    conditional: bool = True,
    reason: str = "USER",
) -> list[int]:
    """Cancel a trader's open orders (`orders_cancel_all`): each book's by its matcher,
    in book order."""
    from trading.orders.cancel import orders_cancel_all

    if not remote():
        return orders_cancel_all(
            trader=trader, mode=mode, market=market, conditional=conditional, reason=reason
        )
    canceled: list[int] = []
    for symbol, book_mode in _books_with_orders(trader, mode, market):
        request = MatcherRequest(
            CANCEL_ALL,
            trader,
            args={
                "mode": book_mode,
                "market": symbol,
                "conditional": conditional,
                "reason": reason,
            },
        )
        (ids,) = _send(symbol, book_mode, request)
        canceled += ids
    return canceled


def market_orders_cancel_submit(*, symbol: str) -> list[int]:
    """Cancel every open order of a delisted market (`market_delist`), each book's by
    its matcher: behind the requests it already holds, so that an order it placed
    before it saw the market delisted is cancelled too."""
    from trading.models import Book

    canceled: list[int] = []
    modes = Book.objects.filter(market__symbol=symbol).order_by("pk").values_list("mode", flat=True)
    for mode in modes:
        request = MatcherRequest(DELIST, None, args={"mode": mode, "market": symbol})
        (ids,) = _send(symbol, mode, request)
        canceled += ids
    return canceled


def triggers_fire() -> list[tuple[int, str]]:
    """The clock's sweep (`trading.orders.conditional.triggers_fire`): each conditional
    order whose trigger was crossed placed by its book's matcher. (id, outcome) each; a
    book whose matcher does not answer is left for the next sweep."""
    from trading.orders.conditional import trailing_follow, triggers_due
    from trading.orders.conditional import triggers_fire as fire_here

    if not remote():
        return fire_here()
    trailing_follow()
    due = triggers_due()
    if not due:
        return []
    from trading.models import Order

    books = dict(
        (pk, (symbol, mode))
        for pk, symbol, mode in Order.objects.filter(pk__in=due).values_list(
            "pk", "market__symbol", "mode"
        )
    )
    fired: list[tuple[int, str]] = []
    unavailable: set[tuple[str, str]] = set()
    for order_id in due:
        book = books.get(order_id)
        if book is None or book in unavailable:
            continue
        try:
            (outcome,) = _send(*book, MatcherRequest(TRIGGER, None, order_id=order_id))
        except ExchangeError as e:
            unavailable.add(book)
            outcome = e.code
        fired.append((order_id, outcome))
    return fired


def account_liquidate_submit(*, trader_id: int, mode: str) -> Liquidation | None:
    """Liquidate the account if it is below maintenance (`liquidate_account`), by the
    matcher of the first book it holds a position or an order in, ahead of the requests
    waiting for it, and without making it rebuild the books it writes."""
    from trading.models import Liquidation
    from trading.services.liquidation import liquidate_account

    def here() -> Liquidation | None:
        return liquidate_account(trader_id=trader_id, mode=mode)

    symbol = _account_book(trader_id, mode) if remote() else None
    if symbol is None:
        return here()
    request = MatcherRequest(LIQUIDATE, None, args={"trader_id": trader_id, "mode": mode})
    done = _by_matcher_or_here(symbol, mode, request, here)
    return Liquidation.objects.get(pk=done) if isinstance(done, int) else done


def market_settle_submit(*, market: Market, price: Decimal) -> Settlement | None:
    """Settle an expired market (`market_settle`) by the matcher of its books."""
    from trading.models import Book, Settlement
    from trading.services.expiry import market_settle

    def here() -> Settlement | None:
        return market_settle(market=market, price=price)

    mode = Book.objects.filter(market=market).order_by("pk").values_list("mode", flat=True).first()
    if not remote() or mode is None:
        return here()
    request = MatcherRequest(SETTLE, None, args={"market": market.symbol, "price": str(price)})
    done = _by_matcher_or_here(market.symbol, mode, request, here)
    return Settlement.objects.get(pk=done) if isinstance(done, int) else done


def account_job_submit(name: str, *, trader_id: int, mode: str, **kwargs: Any) -> Any:
    """Run the job `name` (`job_register`), which writes the account's books in `mode`,
    by the matcher of the first book it holds a position or an order in, behind the
    requests waiting there (the account's own orders sent before it among them), so
    that the matcher's books stay its own; here when it has none, or no matcher takes
    it. Returns what the job returned."""
    from trading.matcher.requests import JOB, job_run

    def here() -> Any:
        return job_run(name, trader_id=trader_id, mode=mode, **kwargs)

    symbol = _account_book(trader_id, mode) if remote() else None
    if symbol is None:
        return here()
    args = {"name": name, "kwargs": {"trader_id": trader_id, "mode": mode, **kwargs}}
    return _by_matcher_or_here(
        symbol, mode, MatcherRequest(JOB, None, args=args), here, first=False
    )


def _account_book(trader_id: int, mode: str) -> str | None:
    """The market of the first book (by market id) the account holds a position or an
    order in, in `mode`: whose matcher carries out work on the account's books; None
    without one."""
    from trading.models import Book
    from trading.selectors import account_market_ids

    market_ids = account_market_ids(trader_id, mode)
    if not market_ids:
        return None
    found = Book.objects.filter(market_id=market_ids[0], mode=mode)
    return found.values_list("market__symbol", flat=True)[0]


# How long, after a matcher failed to take such work (liquidation, expiry), the clock
# does all of it itself rather than ask again: each ask of a matcher that is gone costs
# MATCHER_TIMEOUT, and the clock does one thing at a time. Longer than a sweep, so that
# a sweep over many books waits once, not once a book.
UNANSWERED_SECONDS = 30.0
_unanswered_until = 0.0


def _by_matcher_or_here(
    symbol: str,
    mode: str,
    request: MatcherRequest,
    here: Callable[[], Any],
    *,
    first: bool = True,
):
    """The outcome of `request` from the book's matcher; when no matcher took it (or
    Redis cannot be reached), `here()`'s. Safe either way: the work takes every book's
    row lock wherever it runs, and finds the account or market as the matcher's
    transaction, committed or rolled back, left it. A failure of the work itself in
    the matcher is raised, as it would be here, and tried again by the next sweep."""
    global _unanswered_until
    import redis

    if _unanswered_until > time.monotonic():
        return here()
    try:
        # A liquidation or a settlement goes ahead of the orders waiting (`first`): what
        # it closes is losing money while it waits.
        (outcome,) = _send(symbol, mode, request, first=first)
    except (ExchangeError, redis.RedisError) as e:
        unreachable = isinstance(e, redis.RedisError) or isinstance(e.__cause__, redis.RedisError)
        if isinstance(e, ExchangeError) and e.code != "MATCHER_UNAVAILABLE" and not unreachable:
            raise
        log.warning("%s of %s %s done here: %s", request.kind, symbol, mode, e)
        _unanswered_until = time.monotonic() + UNANSWERED_SECONDS
        return here()
    return outcome


def _books_with_orders(
    trader: AbstractBaseUser, mode: str | None, market: str | None
) -> Iterable[tuple[str, str]]:
    from trading.models import LIVE_STATUSES, Order

    orders = Order.objects.filter(trader=trader, status__in=LIVE_STATUSES)
    if mode:
        orders = orders.filter(mode=mode)
    if market:
        orders = orders.filter(market__symbol=market)
    return sorted(set(orders.values_list("market__symbol", "mode")))


def _send(symbol: str, mode: str, request: MatcherRequest, *, first: bool = False) -> Outcomes:
    from trading.matcher.redis_queue import request_send

    if not _book_known(symbol, mode):
        # No matcher would take it: refused here rather than left to time out.
        raise ExchangeError("UNKNOWN_MARKET", f"no market {symbol}", field="market")
    return request_send(symbol, mode, request, first=first)


# The books known to exist (a book is never deleted): asked of the database once each.
_books_known: set[tuple[str, str]] = set()


def _book_known(symbol: str, mode: str) -> bool:
    if (symbol, mode) not in _books_known:
        from trading.models import Book

        if not Book.objects.filter(market__symbol=symbol, mode=mode).exists():
            return False
        _books_known.add((symbol, mode))
    return True
