"""Position arithmetic: realized PnL is exactly zero-sum over any flow of fills."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from trading import risk

D = Decimal
prices = st.integers(1, 200_000).map(lambda t: D(t) / 2)  # tick 0.5
qtys = st.integers(1, 5_000).map(lambda n: D(n) / 1000)  # lot 0.001


@given(st.lists(st.tuples(st.booleans(), qtys, prices), min_size=1, max_size=60))
def test_realized_pnl_is_zero_sum_and_cost_basis_exact(flow):
    """Two traders trade only with each other: A's position is -B's, and the sum of
    their realized PnL always equals the sum of their open cost (0 once flat)."""
    a = [D(0), D(0), D(0)]  # size, open_notional, realized
    b = [D(0), D(0), D(0)]
    for a_buys, q, px in flow:
        for pos, signed in ((a, q if a_buys else -q), (b, -q if a_buys else q)):
            change = risk.apply_fill(pos[0], pos[1], signed, px)
            pos[0], pos[1] = change.size, change.open_notional
            pos[2] += change.realized
        assert a[0] == -b[0]
        assert a[2] + b[2] == a[1] + b[1]
        if a[0] == 0:
            assert a[1] == 0 and b[1] == 0


@given(qtys, prices, prices)
def test_round_trip_realizes_the_price_difference(q, entry, exit_):
    opened = risk.apply_fill(D(0), D(0), q, entry)
    closed = risk.apply_fill(opened.size, opened.open_notional, -q, exit_)
    assert closed.size == 0 and closed.open_notional == 0
    assert closed.realized == q * (exit_ - entry)


def test_flip_realizes_the_closed_part_and_opens_the_rest_at_the_fill_price():
    change = risk.apply_fill(D("1"), D("60000"), D("-3"), D("61000"))
    assert change.realized == D("1000")
    assert change.size == D("-2") and change.open_notional == D("-122000")


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_scaled_reservation_never_exceeds_the_original(reserved_units, split):
    reserved = D(reserved_units) / 100
    before, after = D(10**6), D(split)
    scaled = risk.scale_reserve(reserved, before, min(after, before))
    assert 0 <= scaled <= reserved


def test_liquidation_price_of_a_lone_long():
    # 1 BTC long from 60000, 10x, 6000 USDC of cash, 0.5% maintenance:
    # 6000 + (P - 60000) = 0.005 P  ->  P = 54000 / 0.995
    from trading.margin import Account, Exposure

    e = Exposure(
        position=None,
        kind="PERP",
        size=D(1),
        open_notional=D(60000),
        mark=D(60000),
        index=D(60000),
        leverage=D(10),
        maintenance_ratio=D("0.005"),
    )
    account = Account(D(6000), D(0), [e])
    assert account.liquidation_price(e) == (D(54000) / D("0.995")).quantize(D("1e-12"))
    assert e.initial() == D(6000) and e.value() == 0
    assert account.bankruptcy_price(e) == D(54000)
