"""dexsite.sql: the order path's hand-written statements give and take what the ORM
would, on the database the tests run on."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dexsite import sql
from ledger.models import Balance, LedgerEntry, LedgerReason
from trading.models import Book, Market, Order, Position
from trading.tests.factories import MarketFactory, UserFactory, fund

pytestmark = pytest.mark.django_db

BALANCES = sql.Columns(Balance)


def test_select_converts_like_the_orm():
    market = MarketFactory(tick_size=Decimal("0.00000001"), mark_price=Decimal("12345.6789"))
    (got,) = sql.select(sql.Columns(Market), '"symbol" = %s', [market.symbol])
    orm = Market.objects.get(pk=market.pk)
    for field in Market._meta.concrete_fields:
        assert getattr(got, field.attname) == getattr(orm, field.attname), field.name
    assert isinstance(got.tick_size, Decimal)
    assert not got._state.adding


def test_select_some_fields_and_none_found():
    market = MarketFactory()
    cols = sql.Columns(Market, ["id", "symbol"])
    assert [m.symbol for m in sql.select(cols, '"id" = %s', [market.pk])] == [market.symbol]
    assert sql.select(cols, '"id" = %s', [market.pk + 1000]) == []


def test_insert_sets_keys_and_stamps_dates():
    user = UserFactory()
    before = timezone.now()

    def entries():
        return [
            LedgerEntry(
                trader=user, asset="USDC", mode="PAPER", amount=Decimal(a), reason="DEPOSIT"
            )
            for a in ("0.000000000001", "123456789012345678.5", "-7")
        ]

    ours, orms = entries(), LedgerEntry.objects.bulk_create(entries())
    sql.insert(ours)
    assert all(r.pk for r in ours) and len({r.pk for r in ours} | {r.pk for r in orms}) == 6
    stored = LedgerEntry.objects.in_bulk([r.pk for r in ours + orms])
    for mine, theirs in zip(ours, orms, strict=True):
        # Stored and read back as the ORM stores and reads them.
        assert stored[mine.pk].amount == stored[theirs.pk].amount
        assert stored[mine.pk].created_at >= before - timedelta(seconds=1)
    if connection.vendor == "postgresql":
        assert [stored[r.pk].amount for r in ours] == [r.amount for r in ours]


def test_update_writes_fields_and_auto_now():
    user = UserFactory()
    market = MarketFactory()
    p = Position.objects.create(trader=user, market=market, mode="PAPER")
    p.updated_at = timezone.now() - timedelta(days=3)
    Position.objects.filter(pk=p.pk).update(updated_at=p.updated_at)
    q = Position.objects.create(trader=UserFactory(), market=market, mode="PAPER")
    p.size, q.size = Decimal("1.5"), Decimal("-0.000000000001")
    sql.update([p, q], ["size", "updated_at"])
    p.refresh_from_db()
    q.refresh_from_db()
    assert (p.size, q.size) == (Decimal("1.5"), Decimal("-0.000000000001"))
    assert timezone.now() - p.updated_at < timedelta(minutes=1)


def test_update_breaking_a_constraint_raises_and_rolls_back():
    a, b = UserFactory(), UserFactory()
    fund(a, "10")
    fund(b, "10")
    rows = sql.select(BALANCES, '"trader_id" IN (%s, %s)', [a.pk, b.pk], order_by='"id"')
    rows[0].locked = Decimal("5")
    rows[1].locked = Decimal("11")  # more than the balance holds
    with pytest.raises(IntegrityError), transaction.atomic():
        sql.update(rows, ["locked"])
    assert set(Balance.objects.values_list("locked", flat=True)) == {Decimal(0)}
    # The connection (and its reused cursor) still works after the failure.
    assert len(sql.select(BALANCES, '"trader_id" = %s', [a.pk])) == 1


def test_lock_and_capture():
    market = MarketFactory()
    book = Book.objects.get(market=market, mode="PAPER")
    with CaptureQueriesContext(connection) as seen, transaction.atomic():
        (locked,) = sql.select(sql.Columns(Book), '"id" = %s', [book.pk], lock=True)
    assert locked.pk == book.pk
    statements = [q["sql"] for q in seen.captured_queries]
    assert any("FROM" in s and "trading_book" in s for s in statements)
    if connection.features.has_select_for_update:
        assert any(s.rstrip().endswith("FOR UPDATE") for s in statements)


@pytest.mark.django_db(transaction=True)
def test_cursor_is_reused_and_follows_a_new_connection():
    sql.fetch("SELECT 1")
    first = sql.cursor()
    assert sql.cursor() is first
    connection.close()
    assert sql.fetch("SELECT 1") == [(1,)]
    if connection.vendor == "postgresql":
        assert sql.cursor() is not first


@pytest.mark.skipif(connection.vendor != "postgresql", reason="sequences are PostgreSQL's")
def test_reserved_keys_are_new_ascending_and_written_with_the_rows():
    user = UserFactory()
    market = MarketFactory()
    other = MarketFactory(symbol="ETH-PERP")
    before = Position.objects.create(trader=user, market=other, mode="PAPER")
    keys = sql.keys_reserve(Position, 3)
    assert len(keys) == 3 and keys == sorted(keys) and keys[0] > before.pk
    rows = [
        Position(pk=k, trader=user, market=market, mode=m)
        for k, m in zip(keys[:2], ["REAL", "PAPER"], strict=True)
    ]
    sql.insert(rows, keyed=True)
    assert not rows[0]._state.adding
    assert sorted(Position.objects.filter(pk__in=keys).values_list("pk", "mode")) == [
        (keys[0], "REAL"),
        (keys[1], "PAPER"),
    ]
    # A key reserved and never used leaves a gap, never a collision.
    after = Position.objects.create(trader=user, market=other, mode="REAL")
    assert after.pk > keys[2]


def test_no_reserved_keys_without_sequences():
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL has sequences")
    assert sql.keys_reserve(Position, 2) is None


def test_a_pipeline_runs_its_statements_and_reports_a_broken_constraint():
    a, b = UserFactory(), UserFactory()
    fund(a, "10")
    fund(b, "10")
    rows = sql.select(BALANCES, '"trader_id" IN (%s, %s)', [a.pk, b.pk], order_by='"id"')
    with transaction.atomic(), sql.pipeline():
        rows[0].locked = Decimal("4")
        sql.update(rows[:1], ["locked"])
        sql.insert([LedgerEntry(trader=a, asset="USDC", mode="PAPER", amount=0, reason="FEE")])
    assert Balance.objects.get(pk=rows[0].pk).locked == Decimal(4)
    rows[1].locked = Decimal("11")  # more than the balance holds
    with pytest.raises(IntegrityError), transaction.atomic(), sql.pipeline():
        rows[0].locked = Decimal("1")
        sql.update(rows, ["locked"])
    assert sorted(Balance.objects.values_list("locked", flat=True)) == [0, 4]
    assert len(sql.select(BALANCES, '"trader_id" = %s', [a.pk])) == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="sequences are PostgreSQL's")
def test_keys_of_several_tables_in_one_statement():
    sql.keys_reserve_each([(Position, 1), (LedgerEntry, 1)])  # (their sequences' names)
    with CaptureQueriesContext(connection) as q:
        positions, ledger = sql.keys_reserve_each([(Position, 3), (LedgerEntry, 2)])
    assert len(q.captured_queries) == 1
    assert len(positions) == 3 and positions == sorted(positions)
    assert len(ledger) == 2 and ledger == sorted(ledger)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement on PostgreSQL only")
def test_an_update_of_several_rows_refuses_a_value_too_long_and_keeps_a_rows_last_state():
    market = MarketFactory()
    a, b = UserFactory(), UserFactory()
    fund(a, "10")
    fund(b, "10")
    rows = sql.select(BALANCES, '"trader_id" IN (%s, %s)', [a.pk, b.pk], order_by='"id"')
    again = sql.select(BALANCES, '"id" = %s', [rows[0].pk])[0]
    rows[0].locked, rows[1].locked, again.locked = Decimal(1), Decimal(2), Decimal(3)
    sql.update([rows[0], rows[1], again], ["locked"])
    assert list(Balance.objects.order_by("id").values_list("locked", flat=True)) == [3, 2]
    p, q = (Position.objects.create(trader=t, market=market, mode="PAPER") for t in (a, b))
    p.mode = q.mode = "PAPER-TOO-LONG"
    with pytest.raises(DatabaseError), transaction.atomic():
        sql.update([p, q], ["mode"])
    assert set(Position.objects.values_list("mode", flat=True)) == {"PAPER"}


def test_insert_writes_nulls_and_refuses_a_value_too_long():
    market = MarketFactory()
    user = UserFactory()

    def order(**kw):
        base = dict(trader=user, market=market, mode="PAPER", side="BUY", type="MARKET")
        now = timezone.now()
        return Order(
            **base,
            qty=Decimal("0.5"),
            time_in_force="IOC",
            status="FILLED",
            created_at=now,
            updated_at=now,
            **kw,
        )

    # A column with no value in any row (every price), and one with some (clientOrderId).
    rows = [order(price=None, client_order_id=None), order(price=None, client_order_id="x")]
    sql.insert(rows)
    stored = Order.objects.in_bulk([o.pk for o in rows])
    assert [(stored[o.pk].price, stored[o.pk].client_order_id) for o in rows] == [
        (None, None),
        (None, "x"),
    ]
    if connection.vendor != "postgresql":
        return  # SQLite does not hold a column to its length
    too_long = [order(client_order_id="c" * 65), order(client_order_id="ok")]
    with pytest.raises(DatabaseError), transaction.atomic():
        sql.insert(too_long)
    assert not Order.objects.filter(client_order_id="ok").exists()


def test_placeholders_are_numbered_once_and_a_percent_sign_kept():
    assert sql.numbered("a = %s AND b LIKE 'x%%' AND c IN (%s, %s)") == (
        "a = $1 AND b LIKE 'x%' AND c IN ($2, $3)"
    )
    # The same statement on the database, with the cursor the order path uses.
    assert sql.fetch("SELECT %s || '%%', %s", ["5", 7]) == [("5%", 7)]


def test_values_are_sent_as_the_orm_prepares_them():
    user = UserFactory()
    market = MarketFactory()
    now = timezone.now()
    fields = {f.name: f for f in Order._meta.concrete_fields}
    cases = [
        ("price", Decimal("64000.5")),
        ("price", None),
        ("qty", Decimal("1E-12")),
        ("side", "BUY"),
        ("side", Order._meta.get_field("side").choices[0][0]),
        ("reduce_only", True),
        ("trader", user.pk),
        ("market", market.pk),
        ("created_at", now),
        ("client_order_id", ""),
    ]
    for name, value in cases:
        f = fields[name]
        assert sql.prepared((f,), [value], connection) == [f.get_db_prep_save(value, connection)]
    # What the ORM refuses or changes is left to it: a decimal that is not a number, a
    # date without a time zone (read as the default zone's, with a warning).
    with pytest.raises(Exception) as refused:
        fields["price"].get_db_prep_save(Decimal("NaN"), connection)
    with pytest.raises(type(refused.value)):
        sql.prepared((fields["price"],), [Decimal("NaN")], connection)
    naive = now.replace(tzinfo=None)
    with pytest.warns(RuntimeWarning):
        (sent,) = sql.prepared((fields["created_at"],), [naive], connection)
    with pytest.warns(RuntimeWarning):
        assert sent == fields["created_at"].get_db_prep_save(naive, connection)


def test_a_model_with_init_receivers_is_built_by_the_orm():
    from django.db.models.signals import post_init

    market = MarketFactory()
    seen = []

    def heard(sender, instance, **kw):
        seen.append(instance.symbol)

    columns = sql.Columns(Market)
    (plain,) = sql.select(columns, '"id" = %s', [market.pk])
    assert seen == [] and plain._state.db == connection.alias
    post_init.connect(heard, sender=Market)
    sql._plain.cache_clear()  # (asked again: receivers are looked for once per model)
    try:
        (heard_of,) = sql.select(sql.Columns(Market), '"id" = %s', [market.pk])
    finally:
        post_init.disconnect(heard, sender=Market)
        sql._plain.cache_clear()
    assert seen == [market.symbol] and not heard_of._state.adding


def test_rows_inserted_from_values_match_rows_inserted_from_instances():
    user = UserFactory()
    now = timezone.now()
    names = ("trader_id", "asset", "mode", "amount", "reason", "ref", "created_at")
    values = [
        (user.pk, "USDC", "PAPER", Decimal("-0.000000000001"), LedgerReason.FEE, "order:1", now),
        (user.pk, "BTC", "PAPER", Decimal("12.5"), "TRADE", "", now),
    ]
    sql.insert_values(LedgerEntry, names, values)
    sql.insert([LedgerEntry(**dict(zip(names, v, strict=True))) for v in values])
    rows = list(LedgerEntry.objects.filter(trader=user).order_by("id").values_list(*names))
    # (The instances' dates are stamped by `insert`, as `save()` stamps them.)
    assert len(rows) == 4 and [r[:6] for r in rows[:2]] == [r[:6] for r in rows[2:]]
    assert [r[3] for r in rows[:2]] == [v[3] for v in values]
    assert [r[6] for r in rows[:2]] == [now, now]


def test_new_rows_are_made_as_the_orm_makes_them():
    from trading.models import Fill, Trade

    user = UserFactory()
    market = MarketFactory()
    now = timezone.now()
    order = Order(
        trader=user, market=market, mode="PAPER", side="BUY", type="LIMIT",
        time_in_force="GTC", price=Decimal("64000"), qty=Decimal("0.1"),
        status="NEW", created_at=now, updated_at=now,
    )  # fmt: skip
    trade = Trade(market=market, mode="PAPER", price=Decimal("1"), qty=Decimal("2"),
                  taker_side="BUY", taker_order=order, maker_order_id=7, created_at=now)  # fmt: skip
    shapes = [
        (Order, dict(trader=user, market=market, mode="PAPER", side="BUY", type="LIMIT",
                     time_in_force="GTC", price=None, qty=Decimal("0.1"), status="NEW",
                     client_order_id=None, created_at=now, updated_at=now)),
        (Trade, dict(market=market, mode="PAPER", price=Decimal("1"), qty=Decimal("2"),
                     taker_side="BUY", taker_order=order, maker_order_id=7, liquidation=False,
                     created_at=now)),
        (Fill, dict(trade=trade, order=order, trader_id=user.pk, market=market, mode="PAPER",
                    side="BUY", price=Decimal("1"), qty=Decimal("2"), fee=Decimal("0.01"),
                    liquidity="TAKER", created_at=now)),
    ]  # fmt: skip
    for model, values in shapes:
        ours, orms = sql.new(model, **values), model(**values)
        assert type(ours) is model
        mine = {k: v for k, v in ours.__dict__.items() if k != "_state"}
        theirs = {k: v for k, v in orms.__dict__.items() if k != "_state"}
        assert mine == theirs, model
        assert ours._state.fields_cache == orms._state.fields_cache
        assert (ours._state.db, ours._state.adding) == (orms._state.db, orms._state.adding)
    # What the ORM refuses, it still refuses.
    with pytest.raises(ValueError):
        sql.new(Trade, market=user)
    with pytest.raises(TypeError):
        sql.new(Trade, no_such_field=1)


def test_queries_run_together_answer_each_in_order():
    market = MarketFactory()
    book = Book.objects.get(market=market, mode="PAPER")
    names = sql.Columns(Market, ["id", "symbol"])
    queries = [
        sql.select_query(sql.Columns(Book), '"id" = %s', [book.pk], lock=True),
        sql.Query("SELECT 1"),  # rows not read
        sql.select_query(names, '"id" = %s', [market.pk + 1000]),
        sql.Query("SELECT %s + 1", [41], lambda rows: rows[0][0]),
        sql.select_query(names, '"symbol" = %s', [market.symbol]),
    ]
    locked, nothing, missing, answer, found = sql.run_all(queries)
    assert [b.pk for b in locked] == [book.pk]
    assert nothing is None and missing == [] and answer == 42
    assert [m.symbol for m in found] == [market.symbol]
    if connection.vendor == "postgresql":
        from trading.tests.wire import round_trips

        assert round_trips(lambda: sql.run_all(queries)) == 1
        assert round_trips(lambda: [q.run() for q in queries]) == len(queries)


def test_queries_run_together_stop_at_an_error_and_raise_it():
    user = UserFactory()
    fund(user, "10")
    balance = Balance.objects.get(trader=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        sql.run_all(
            [
                sql.Query(
                    'UPDATE "accounts_balance" SET "total" = 5 WHERE "id" = %s', [balance.pk]
                ),
                sql.Query(
                    'UPDATE "accounts_balance" SET "locked" = "total" + 1 WHERE "id" = %s',
                    [balance.pk],
                ),
                sql.Query(
                    'UPDATE "accounts_balance" SET "total" = 7 WHERE "id" = %s', [balance.pk]
                ),
            ]
        )
    assert Balance.objects.get(pk=balance.pk).total == Decimal("10")
