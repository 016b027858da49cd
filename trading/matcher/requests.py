"""What the matcher is asked to do, and how one such request is carried over Redis.

A `MatcherRequest` is one API call's worth of work on one book: a trader's orders to
place (one, or a batch's run on that book), one order to cancel, or a cancel-all on
that book; or, from the clock, a conditional order whose trigger was crossed, an
account to liquidate (LIQUIDATE) or a market to settle at expiry (SETTLE). `request_run`
is the one place requests are carried out, in the matcher process or, in the embedded
run, in the web process that received them: consecutive placings and cancels share one
transaction (`orders_place_each`, which groups them by book), the others run in turn, in
the order they came. A DELIST (the operator's) cancels every open order of a book whose
market is delisted. A JOB is work of an app above trading that writes an account's
books (a paper reset), registered by name (`job_register`).

A liquidation, a settlement or a job may write several books: it goes to the matcher of
the first of them (`trading.matcher`; a liquidation or a settlement ahead of the
requests waiting there), and takes every book's row lock as it does anywhere. A book it
writes that another matcher owns (when matchers are sharded) is rebuilt once by its
owner, whose cached copy's `seq` no longer matches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from dexsite.errors import ExchangeError

log = logging.getLogger("matcher")

PLACE, CANCEL, CANCEL_ALL, TRIGGER, DELIST = "place", "cancel", "cancel_all", "trigger", "delist"
LIQUIDATE, SETTLE, JOB = "liquidate", "settle", "job"
KINDS = (PLACE, CANCEL, CANCEL_ALL, TRIGGER, DELIST, LIQUIDATE, SETTLE, JOB)
# What a request that could not be read is taken as: answered as a failure.
UNREADABLE = "unreadable"
# The kinds that name no trader: the clock's triggers, liquidations and settlements, the
# operator's delisting, and jobs (which name their account in their arguments).
_NO_TRADER = (TRIGGER, DELIST, LIQUIDATE, SETTLE, JOB)

# Work of the apps above trading that writes an account's books under their row locks
# (a paper reset), by name: registered when such an app loads (`job_register`), since
# trading may not import it, and run by the matcher of the account's first book, as a
# liquidation is, so that the matcher's books stay its own.
_jobs: dict[str, Callable[..., Any]] = {}


def job_register(name: str, run: Callable[..., Any]) -> None:
    """Make `run` (keyword arguments and an outcome that JSON carries) a JOB by `name`."""
    _jobs[name] = run


def job_run(name: str, **kwargs: Any) -> Any:
    return _jobs[name](**kwargs)


# The order arguments that are amounts: sent as strings, read back as Decimal.
_DECIMALS = ("qty", "price", "trigger_price", "take_profit", "stop_loss", "callback_rate")


@dataclass(slots=True)
class MatcherRequest:
    kind: str
    # None for the kinds no trader asks for (_NO_TRADER).
    trader: AbstractBaseUser | None
    # PLACE: the orders, as `order_place` takes them (without `trader`).
    orders: list[dict[str, Any]] = field(default_factory=list)
    # CANCEL, TRIGGER: the order.
    order_id: int | None = None
    # CANCEL: the order's book (`market`, `mode`); CANCEL_ALL, DELIST: what to cancel
    # of the book; LIQUIDATE: the account (`trader_id`, `mode`); SETTLE: the market
    # (`market`, its symbol) and the settlement `price`; JOB: the job's `name` and its
    # keyword arguments (`kwargs`).
    args: dict[str, Any] = field(default_factory=dict)
    # Set for a request carried over Redis: its id (where its answer goes), and when it
    # was sent (seconds since the epoch).
    id: str = ""
    sent: float = 0.0


# An outcome per order of a PLACE ((the order, created?) or the ExchangeError that refused
# it), one for a CANCEL (the order), a CANCEL_ALL or DELIST (the cancelled ids), a TRIGGER
# (PLACED, GONE, or the code of the refusal), a LIQUIDATE (the Liquidation's id, None if
# the account was healthy), a SETTLE (the Settlement's id, None if already settled) or a
# JOB (what it returned).
Outcomes = list[Any]


def request_run(requests: list[MatcherRequest]) -> list[Outcomes | BaseException]:
    """Carry out one book's requests, in order. Per request its outcomes, or the
    exception that failed it whole (a refusal of a cancel; a fault)."""
    from trading.models import Market
    from trading.orders.cancel import order_cancel, orders_cancel_all
    from trading.orders.conditional import order_trigger
    from trading.orders.place import orders_place_each
    from trading.orders.request import CancelRequest
    from trading.services.expiry import market_settle
    from trading.services.liquidation import liquidate_account

    answers: list[Outcomes | BaseException] = []
    i = 0
    while i < len(requests):
        request = requests[i]
        if request.kind not in KINDS:
            answers.append(ValueError(f"unknown matcher request {request.kind!r}"))
            i += 1
            continue
        if request.trader is None and request.kind not in _NO_TRADER:
            # Its account is gone (deleted while the request waited).
            answers.append(ExchangeError("NOT_FOUND", "trader not found", status_code=404))
            i += 1
            continue
        if _joins(request):
            # Placings and cancels that came one after another: one transaction.
            run = [request]
            while i + len(run) < len(requests) and _joins(requests[i + len(run)]):
                run.append(requests[i + len(run)])
            items: list[Any] = []
            for r in run:
                if r.kind == PLACE:
                    items += [(r.trader, o) for o in r.orders]
                else:
                    items.append(
                        CancelRequest(r.trader, r.order_id, r.args["market"], r.args["mode"])
                    )
            try:
                outcomes = orders_place_each(items)
            except Exception as e:
                answers += [e] * len(run)
            else:
                at = 0
                for r in run:
                    if r.kind == PLACE:
                        answers.append(outcomes[at : at + len(r.orders)])
                        at += len(r.orders)
                    else:
                        # A cancel's refusal (or fault) fails its request whole, as
                        # `order_cancel`'s. A placing's is its order's outcome.
                        cancelled = outcomes[at]
                        answers.append(
                            cancelled if isinstance(cancelled, BaseException) else [cancelled]
                        )
                        at += 1
            i += len(run)
            continue
        try:
            if request.kind == CANCEL:
                answers.append([order_cancel(trader=request.trader, order_id=request.order_id)])
            elif request.kind == CANCEL_ALL:
                answers.append([orders_cancel_all(trader=request.trader, **request.args)])
            elif request.kind == TRIGGER:
                answers.append([order_trigger(request.order_id)])
            elif request.kind == DELIST:
                answers.append([orders_cancel_all(trader=None, reason="DELISTED", **request.args)])
            elif request.kind == LIQUIDATE:
                done = liquidate_account(**request.args)
                answers.append([done.pk if done is not None else None])
            elif request.kind == SETTLE:
                market = Market.objects.get(symbol=request.args["market"])
                done = market_settle(market=market, price=Decimal(request.args["price"]))
                answers.append([done.pk if done is not None else None])
            elif request.kind == JOB:
                answers.append([job_run(request.args["name"], **request.args["kwargs"])])
        except Exception as e:
            answers.append(e)
        i += 1
    return answers


def _joins(request: MatcherRequest) -> bool:
    """Whether the request is carried out in one transaction with the placings and
    cancels next to it: a placing, or a cancel that names its book (one sent by an
    earlier release does not, and is carried out alone)."""
    if request.trader is None:
        return False
    return request.kind == PLACE or (
        request.kind == CANCEL and {"market", "mode"} <= request.args.keys()
    )


# -- over Redis -------------------------------------------------------------------------


def request_encode(request: MatcherRequest) -> bytes:
    orders = [
        {k: str(v) if k in _DECIMALS and v is not None else v for k, v in o.items()}
        for o in request.orders
    ]
    return json.dumps(
        {
            "id": request.id,
            "kind": request.kind,
            "trader": request.trader.pk if request.trader is not None else None,
            "orders": orders,
            "orderId": request.order_id,
            "args": request.args,
            # What the previous release's matchers read `args` as: a rolling deploy runs
            # both for a while.
            "cancelAll": request.args,
            "sent": request.sent,
        },
        separators=(",", ":"),
    ).encode()


def requests_decode(raw: list[bytes], users: dict[int, AbstractBaseUser]) -> list[MatcherRequest]:
    """The requests, with their traders (from `users`, a cache the caller keeps; the ones
    missing are read in one query). One that cannot be read (from another release, say)
    is there as UNREADABLE, to be answered as failed; the others as they came."""
    bodies: list[Any] = []
    for r in raw:
        try:
            bodies.append(json.loads(r))
        except ValueError:
            bodies.append(None)
    missing = {b.get("trader") for b in bodies if isinstance(b, dict)} - users.keys() - {None}
    if missing:
        users.update(get_user_model().objects.in_bulk(missing))
    return [_request_of(b, users) for b in bodies]


def _request_of(body: Any, users: dict[int, AbstractBaseUser]) -> MatcherRequest:
    try:
        return MatcherRequest(
            id=body["id"],
            kind=body["kind"],
            trader=users.get(body.get("trader")),
            orders=[
                {k: Decimal(v) if k in _DECIMALS and v is not None else v for k, v in o.items()}
                for o in body.get("orders", [])
            ],
            order_id=body.get("orderId"),
            args=body.get("args", body.get("cancelAll", {})),
            sent=body.get("sent", 0.0),
        )
    except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError):
        log.error("matcher: a request could not be read: %.300r", body)
        found = body.get("id") if isinstance(body, dict) else None
        return MatcherRequest(UNREADABLE, None, id=found if isinstance(found, str) else "")


def answer_encode(answer: Outcomes | BaseException) -> bytes:
    if isinstance(answer, BaseException):
        return json.dumps({"failed": _error_body(answer)}).encode()
    return json.dumps(
        {
            "outcomes": [
                {"error": _error_body(o)} if isinstance(o, BaseException) else {"ok": o}
                for o in answer
            ]
        },
        separators=(",", ":"),
    ).encode()


def answer_decode(raw: bytes) -> Outcomes:
    """The outcomes of a request, each a value or an ExchangeError; an ExchangeError
    raised for a request that failed whole."""
    body = json.loads(raw)
    if "failed" in body:
        raise _error(body["failed"])
    return [_error(o["error"]) if "error" in o else _value(o["ok"]) for o in body["outcomes"]]


def _value(v: Any) -> Any:
    # (the order, created?) travels as a JSON list.
    return tuple(v) if isinstance(v, list) and len(v) == 2 and isinstance(v[1], bool) else v


def _error_body(e: BaseException) -> dict[str, Any]:
    if isinstance(e, ExchangeError):
        return {
            "code": e.code,
            "message": e.message,
            "field": e.field,
            "status": e.status_code,
            "extra": e.extra,
        }
    # A fault, not a refusal: its transaction rolled back, or its COMMIT's outcome is
    # unknown (`_place_together`). The client learns which by asking for its order.
    return {
        "code": "ORDER_STATUS_UNKNOWN",
        "message": "the matcher failed while carrying out the request; query the order "
        "by its clientOrderId before sending it again",
        "field": None,
        "status": 503,
        "extra": {"retryAfter": 1},
    }


def _error(body: dict[str, Any]) -> ExchangeError:
    return ExchangeError(
        body["code"],
        body["message"],
        field=body["field"],
        status_code=body["status"],
        extra=body["extra"],
    )
