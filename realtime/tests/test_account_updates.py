"""`accountUpdate` on the trader channel: the account of `GET /account`, pushed after the
changes that move it, coalesced per account."""

import json
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from accounts.services import paper_faucet_credit, token_for
from realtime.account_updates import Waiting
from realtime.tests.conftest import communicator
from trading.orders.place import order_place
from trading.selectors import account_get
from trading.tests.factories import MarketFactory, UserFactory, fund

D = Decimal


@database_sync_to_async
def traders():
    MarketFactory()
    a, b = UserFactory(), UserFactory()
    fund(a, "100000")
    fund(b, "100000")
    return a, b, token_for(a)


@database_sync_to_async
def place(user, side, price, qty):
    return order_place(
        trader=user,
        market="BTC-PERP",
        mode="PAPER",
        side=side,
        type="MARKET" if price is None else "LIMIT",
        price=None if price is None else D(price),
        qty=D(qty),
    )[0]


async def account_update(comm, until, timeout=5) -> dict:
    """The first `accountUpdate` for which `until` holds (other messages are skipped)."""
    while True:
        msg = json.loads(await comm.receive_from(timeout=timeout))
        if msg["type"] == "accountUpdate" and until(msg):
            return msg


async def trader_socket(user, token):
    comm = communicator(f"/ws/?traderId={user.trader_id}", token=token)
    assert (await comm.connect())[0]
    assert json.loads(await comm.receive_from())["type"] == "subscribed"
    return comm


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_fill_pushes_the_account_as_rest_shows_it(layer):
    a, b, token = await traders()
    comm = await trader_socket(a, token)
    await place(a, "SELL", "64000", "0.5")
    await place(b, "BUY", None, "0.1")
    # Once the fill is in: short 0.1 at 64,000 (mark 64,000), 0.4 still resting.
    msg = await account_update(comm, lambda m: m["maintenanceMargin"] != "0")
    assert msg["channel"] == f"trader.{a.trader_id}" and isinstance(msg["ts"], int)
    body = {k: v for k, v in msg.items() if k not in ("type", "channel", "ts")}
    assert body == await database_sync_to_async(account_get)(trader=a, mode="PAPER")
    # 6,400 of notional: 640 initial at 10x, 32 maintenance at 0.5%.
    assert (body["mode"], body["initialMargin"], body["maintenanceMargin"]) == (
        "PAPER",
        "640",
        "32",
    )
    await comm.disconnect()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_change_of_cash_alone_pushes_the_account_too(layer):
    """The faucet moves no position: the balance's event is enough."""
    a, _, token = await traders()
    comm = await trader_socket(a, token)
    await database_sync_to_async(paper_faucet_credit)(trader=a)
    msg = await account_update(comm, lambda m: m["cash"] != "100000")
    assert D(msg["cash"]) > D("100000") and msg["equity"] == msg["cash"]
    assert msg["mode"] == "PAPER" and msg["marginRatio"] == "0"
    await comm.disconnect()


def test_changes_within_a_tick_make_one_update_due_once_at_the_tick():
    waiting = Waiting()
    key = (7, "PAPER")
    assert waiting.note(key, now=0.05, delay=0.25)
    # Changes noted while it waits join it: they do not push its time back.
    assert not waiting.note(key, now=0.1, delay=0.25)
    assert not waiting.note(key, now=0.2, delay=0.25)
    # Another account noted within the same tick is due with it: one read for both.
    assert waiting.note((7, "REAL"), now=0.2, delay=0.25)
    assert waiting.take_due(0.24) == {}
    assert waiting.next_due() == 0.25
    assert sorted(waiting.take_due(0.25)) == [(7, "PAPER"), (7, "REAL")]
    assert waiting.take_due(0.3) == {}
    # The next change after it was taken (being read, or sent) waits for the next tick:
    # an account goes out at most once a tick.
    assert waiting.note(key, now=0.25, delay=0.25)
    assert waiting.take_due(0.49) == {}
    assert waiting.note((8, "PAPER"), now=0.49, delay=0.25)
    assert sorted(waiting.take_due(0.5)) == [(7, "PAPER"), (8, "PAPER")]
    assert waiting.next_due() is None
