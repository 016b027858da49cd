"""Hand-written statements for the hot write path, with the ORM's own conversions.

Building a queryset and compiling it to SQL costs more CPU than PostgreSQL spends
running the statement (a `filter().first()` on a primary key is several hundred
microseconds of Python; the round trip is about sixty). The order path therefore
states its few statements once, as SQL text built from the models' metadata, and
reuses that text:

* `Columns` selects a model's fields and turns a row back into a model instance
  exactly as the ORM would (the backend's converters: SQLite keeps decimals as text
  or floats and dates as text; psycopg already returns `Decimal` and aware datetimes);
* `select` runs `SELECT <columns> FROM <table> WHERE <where> [ORDER BY] [FOR UPDATE]`;
* `insert` writes many rows in one `INSERT ... RETURNING id` and sets their keys;
* `update` writes some fields of loaded rows, and `execute` runs any other statement;
* `run_all` runs several statements (`Query`: text, parameters, what to build of the
  rows) in one round trip on PostgreSQL, for reads that need no answer of the one
  before (`select_query` and the `*_query` functions of the order path make them).

Only portable SQL goes through here (it runs on SQLite in the embedded set-up and on
PostgreSQL in production); `FOR UPDATE` is dropped where the database has no row locks
(SQLite locks the whole database for a write transaction instead). Values are always
bound as parameters, never formatted into the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any, NamedTuple, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import signals
from django.db.models.base import ModelState

M = TypeVar("M", bound=models.Model)

Converter = Callable[[Any, Any, Any], Any]


def qn(name: str) -> str:
    """A quoted identifier (the same quoting on PostgreSQL and SQLite)."""
    return f'"{name}"'


def placeholders(n: int) -> str:
    """`%s, %s, ...`: n bound parameters, for an `IN (...)`."""
    return ", ".join(["%s"] * n)


class Columns:
    """Fields of `model` (all its concrete fields unless `fields` names some) selected
    from its table, or from the alias `alias`.

    `sql` lists them for a SELECT; `values(row, start)` converts
    `row[start:start + len(self)]` as the ORM converts them, and `build(row, start)`
    makes the model instance of them."""

    def __init__(
        self, model: type[M], fields: Sequence[str] | None = None, alias: str | None = None
    ) -> None:
        meta = model._meta
        chosen = [meta.get_field(f) for f in fields] if fields is not None else meta.concrete_fields
        self.model = model
        self.fields = chosen
        self.attnames = [f.attname for f in chosen]
        self.alias = alias or meta.db_table
        self.sql = ", ".join(f"{qn(self.alias)}.{qn(f.column)}" for f in chosen)
        self._converters: dict[str, list[tuple[int, list[Converter], Any]]] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def converters(self, db: BaseDatabaseWrapper) -> list[tuple[int, list[Converter], Any]]:
        """(column index, converters, expression) for each column that needs any, on
        the database backend of `db`."""
        found = self._converters.get(db.vendor)
        if found is None:
            found = []
            for i, field in enumerate(self.fields):
                col = field.get_col(self.alias)
                convs = db.ops.get_db_converters(col) + field.get_db_converters(db)
                if convs:
                    found.append((i, convs, col))
            self._converters[db.vendor] = found
        return found

    def values(
        self, row: Sequence[Any], start: int = 0, db: BaseDatabaseWrapper | None = None
    ) -> list[Any]:
        db = db or default_db()
        values = list(row[start : start + len(self.fields)])
        for i, convs, col in self.converters(db):
            value = values[i]
            for conv in convs:
                value = conv(value, col, db)
            values[i] = value
        return values

    def build(self, row: Sequence[Any], start: int = 0, db: BaseDatabaseWrapper | None = None) -> M:
        db = db or default_db()
        values = self.values(row, start, db)
        if not _plain(self.model):
            return self.model.from_db(db.alias, self.attnames, values)
        # What `from_db` makes, without `Model.__init__`'s loop over every field and its
        # signals (nobody listens to them for this model): about half the Python.
        obj = self.model.__new__(self.model)
        obj._state = state = ModelState()
        state.adding, state.db = False, db.alias
        obj.__dict__.update(zip(self.attnames, values, strict=True))
        return obj


@cache
def _plain(model: type[models.Model]) -> bool:
    """Whether an instance of `model` is no more than its field values: `from_db` not
    overridden, and no receiver of the init signals for it (as connected when first
    asked: receivers connect at start-up)."""
    return (
        model.from_db.__func__ is models.Model.from_db.__func__
        and not signals.pre_init.has_listeners(model)
        and not signals.post_init.has_listeners(model)
    )


@cache
def _new_plan(model: type[models.Model]) -> tuple[frozenset, list] | None:
    """(the keywords `new` takes, a step per concrete field), or None where `new` must
    leave the construction to `Model.__init__` (someone listens to its signals, a
    one-to-one or generated field, database routers)."""
    from django.conf import settings

    if not _plain(model) or settings.DATABASE_ROUTERS:
        return None
    steps, names = [], set()
    for f in model._meta.concrete_fields:
        if f.generated or (f.is_relation and not f.many_to_one):
            return None
        rel = None
        if f.is_relation:
            ((_, to),) = f.related_fields
            rel = (f.remote_field.model._meta.concrete_model, to.attname)
            names.add(f.name)
        names.add(f.attname)
        steps.append((f.name, f.attname, f, rel))
    return frozenset(names), steps


def new(model: type[M], **values: Any) -> M:
    """`model(**values)` for a new row, without `Model.__init__`'s general keyword
    handling where nothing observes it (see `_new_plan`): each field from its value,
    its related instance (its key taken, the instance cached as the ORM caches it) or
    its default."""
    plan = _new_plan(model)
    if plan is None or not values.keys() <= plan[0]:
        return model(**values)
    obj = model.__new__(model)
    obj._state = state = ModelState()
    d = obj.__dict__
    for name, attname, field, rel in plan[1]:
        if rel is not None and name in values:
            if attname in values:
                return model(**values)  # (both given: the ORM's error)
            value = values[name]
            if value is not None:
                if not isinstance(value, rel[0]):
                    return model(**values)  # (the ORM's error)
                # The ORM's default routing: both objects on one database.
                state.db = state.db or value._state.db or DEFAULT_DB_ALIAS
                if value._state.db is None:
                    value._state.db = state.db
                elif value._state.db != state.db:
                    return model(**values)  # (the ORM's error)
                d[attname] = getattr(value, rel[1])
            else:
                d[attname] = None
            state.fields_cache[name] = value
        elif attname in values:
            d[attname] = values[attname]
        else:
            d[attname] = field.get_default()
    return obj


def default_db() -> BaseDatabaseWrapper:
    return connections[DEFAULT_DB_ALIAS]


def cursor(db: BaseDatabaseWrapper | None = None) -> Any:
    """The connection's cursor, opened once and reused: opening one costs about as much
    Python as running a short statement. (A fresh one while statements are being
    captured, e.g. by `CaptureQueriesContext`, so that they are seen.)

    On PostgreSQL it is psycopg's raw cursor, which takes `$1, $2, ...` placeholders as
    they are (`fetch` and `execute` number the `%s` of their statements, once per text):
    psycopg's own cursor rewrites the placeholders of every statement it runs, and does
    not keep the result for a long one, such as an INSERT of several rows: about 200 us
    of Python for six orders' rows, against 17 us with them numbered."""
    return cursors(1, db)[0]


def cursors(n: int, db: BaseDatabaseWrapper | None = None) -> list[Any]:
    """The connection's cursors, opened once and reused as `cursor` is, at least `n` of
    them, the first `n` for the caller (`run_all` reads the rows of several statements
    sent before any is read, one cursor each)."""
    db = db or default_db()
    if db.queries_logged:
        return [_cursor_new(db) for _ in range(n)]
    raw = db.connection
    held = getattr(db, "_sql_cursors", None)
    if raw is None or held is None or held[0] is not raw:
        db._sql_cursors = held = (db.connection, [])
    kept = held[1]
    for i in range(min(n, len(kept))):
        if getattr(kept[i].cursor, "closed", 0):
            kept[i] = _cursor_new(db)
    while len(kept) < n:
        kept.append(_cursor_new(db))
    return kept


def _numbers(db: BaseDatabaseWrapper) -> bool:
    """Whether statements go to `db` with numbered placeholders: PostgreSQL binding
    parameters on the server (not with DB_SERVER_SIDE_BINDING=0, which binds them in
    the client, for poolers that can't keep prepared statements), and not while they
    are being logged (Django shows a logged statement with its `%s` filled in)."""
    return (
        db.vendor == "postgresql"
        and not db.queries_logged
        and db.settings_dict["OPTIONS"].get("server_side_binding") is True
    )


def _cursor_new(db: BaseDatabaseWrapper) -> Any:
    """A new cursor of `db`: psycopg's raw cursor where statements go with numbered
    placeholders (`_numbers`), marked so (`numbered`), else Django's own. Whether to
    number a statement is decided here once per cursor, not per statement."""
    if not _numbers(db):
        return db.cursor()
    import psycopg

    db.ensure_connection()
    with db.wrap_database_errors:
        wrapper = db.make_cursor(psycopg.RawCursor(db.connection))
    wrapper.numbered = True
    return wrapper


_PLACEHOLDER = re.compile(r"%([%s])")


@lru_cache(maxsize=2048)
def numbered(sql: str) -> str:
    """`sql` with its `%s` placeholders as `$1, $2, ...` (and `%%` as `%`), for
    PostgreSQL's raw cursor."""
    n = 0

    def number(m: re.Match) -> str:
        nonlocal n
        if m.group(1) == "%":
            return "%"
        n += 1
        return f"${n}"

    return _PLACEHOLDER.sub(number, sql)


def _run(c: Any, sql: str, params: Sequence[Any]) -> None:
    c.execute(numbered(sql) if getattr(c, "numbered", False) else sql, params)


def fetch(sql: str, params: Sequence[Any] = (), db: BaseDatabaseWrapper | None = None) -> list:
    c = cursor(db)
    _run(c, sql, params)
    return c.fetchall()


def execute(sql: str, params: Sequence[Any] = ()) -> int:
    """Run a statement; returns the number of rows it changed."""
    c = cursor()
    _run(c, sql, params)
    return c.rowcount


def select(
    columns: Columns,
    where: str,
    params: Sequence[Any] = (),
    *,
    order_by: str = "",
    lock: bool = False,
) -> list[M]:
    """Instances of the rows `where` matches (`where` names the table's columns);
    `lock` adds FOR UPDATE."""
    return select_query(columns, where, params, order_by=order_by, lock=lock).run()


def select_query(
    columns: Columns,
    where: str,
    params: Sequence[Any] = (),
    *,
    order_by: str = "",
    lock: bool = False,
) -> Query:
    """`select` as a `Query`, to be run with others (`run_all`)."""
    table = qn(columns.model._meta.db_table)
    sql = f"SELECT {columns.sql} FROM {table} WHERE {where}"  # noqa: S608 (bound values)
    if order_by:
        sql += f" ORDER BY {order_by}"
    db = default_db()
    if lock and db.features.has_select_for_update:
        sql += " FOR UPDATE"
    return Query(sql, params, lambda rows: [columns.build(row, 0, db) for row in rows])


class Query(NamedTuple):
    """A statement, its parameters, and what to make of its rows (`build`; None for a
    statement whose rows are not read)."""

    text: str
    params: Sequence[Any] = ()
    build: Callable[[list], Any] | None = None

    def run(self) -> Any:
        c = cursor()
        _run(c, self.text, self.params)
        return None if self.build is None else self.build(c.fetchall())


def run_all(queries: Sequence[Query]) -> list[Any]:
    """Run `queries` one after the other; per query, what its `build` made of its rows.

    On PostgreSQL they go out together and their answers come back together: one round
    trip, not one each (pipeline mode). The server still runs each after the one
    before, with a snapshot of its own, so a statement sees what the locks taken before
    it protect, exactly as if it had been sent alone. An error aborts the transaction
    at the statement that failed, and is raised here."""
    db = default_db()
    if db.vendor != "postgresql" or len(queries) < 2:
        return [q.run() for q in queries]
    db.ensure_connection()
    held = cursors(len(queries), db)[: len(queries)]
    with db.wrap_database_errors, db.connection.pipeline():
        for c, q in zip(held, queries, strict=True):
            _run(c, q.text, q.params)
    # Read once the pipeline has ended: its end waits for every answer at once (a read
    # inside it would wait for the answers up to its statement, and the end again).
    return [
        None if q.build is None else q.build(c.fetchall())
        for c, q in zip(held, queries, strict=True)
    ]


# Values that PostgreSQL's driver takes as they are, by column type: for these the ORM's
# preparation (`get_db_prep_save`, several calls deep for each value) returns the value
# itself, so it is skipped. Anything else (a naive date, a non-finite decimal, another
# type, another database) still goes through it.
_TEXT = {"CharField", "TextField", "SlugField", "EmailField", "URLField"}
_AS_IS: dict[str, Callable[[Any], bool]] = {
    **dict.fromkeys(_TEXT, lambda v: type(v) is str),
    **dict.fromkeys(
        [
            "AutoField",
            "BigAutoField",
            "BigIntegerField",
            "IntegerField",
            "PositiveBigIntegerField",
            "PositiveIntegerField",
            "PositiveSmallIntegerField",
            "SmallIntegerField",
        ],
        lambda v: type(v) is int,
    ),
    "BooleanField": lambda v: type(v) is bool,
    "DecimalField": lambda v: type(v) is Decimal and v.is_finite(),
    "DateTimeField": lambda v: type(v) is datetime and v.tzinfo is not None,
}


@cache
def _as_is(fields: tuple[models.Field, ...], vendor: str) -> list[Callable[[Any], bool] | None]:
    """Per field, the test of a value the driver takes as it is (None: none is)."""
    out = []
    for f in fields:
        target = f.target_field if f.is_relation else f
        out.append(_AS_IS.get(target.get_internal_type()) if vendor == "postgresql" else None)
    return out


def prepared(
    fields: tuple[models.Field, ...], values: Sequence[Any], db: BaseDatabaseWrapper
) -> list[Any]:
    """`values` of `fields` as the ORM would send them to `db` (`get_db_prep_save`)."""
    return [
        v if v is None or (as_is is not None and as_is(v)) else f.get_db_prep_save(v, db)
        for f, as_is, v in zip(fields, _as_is(fields, db.vendor), values, strict=True)
    ]


@cache
def _preparer(
    fields: tuple[models.Field, ...], add: bool, vendor: str
) -> Callable[[models.Model, BaseDatabaseWrapper], list[Any]]:
    """A function of an instance: the values of `fields` as `save()` would send them
    (dates stamped for `auto_now`, and `auto_now_add` when `add`)."""
    steps = []
    for f, as_is in zip(fields, _as_is(fields, vendor), strict=True):
        stamps = getattr(f, "auto_now", False) or (add and getattr(f, "auto_now_add", False))
        steps.append((f, f.attname, stamps, as_is))

    def prepare(obj: models.Model, db: BaseDatabaseWrapper) -> list[Any]:
        out = []
        d = obj.__dict__
        for f, attname, stamps, as_is in steps:
            v = (
                f.pre_save(obj, add)
                if stamps
                else d[attname]
                if attname in d
                else getattr(obj, attname)
            )
            out.append(
                v if v is None or (as_is is not None and as_is(v)) else f.get_db_prep_save(v, db)
            )
        return out

    return prepare


@cache
def _insert_plan(
    model: type[models.Model], names: tuple[str, ...] | None, keyed: bool = False
) -> tuple[list, str]:
    meta = model._meta
    if names is None:
        fields = [f for f in meta.concrete_fields if keyed or not f.primary_key]
    else:
        fields = [meta.get_field(n) for n in names]
    cols = ", ".join(qn(f.column) for f in fields)
    return fields, f"INSERT INTO {qn(meta.db_table)} ({cols}) VALUES "  # noqa: S608


def insert(
    objs: Sequence[M],
    fields: Iterable[str] | None = None,
    *,
    keyed: bool = False,
    keys: bool = True,
) -> None:
    """Insert new rows of one model in one statement and set their primary keys.
    `fields` are the columns written, by default every concrete field but the key (an
    `auto_now`/`auto_now_add` date among them is stamped as `save()` would). `keyed`:
    the rows already have their keys (from `keys_reserve`), written with them. `keys`
    False: the caller does not need the new keys (nothing is read back, so that the
    statement can join a `pipeline`)."""
    if not objs:
        return
    model = type(objs[0])
    fields_, head = _insert_plan(model, None if fields is None else tuple(fields), keyed)
    db = default_db()
    prepare = _preparer(tuple(fields_), True, db.vendor)
    params: list[Any] = []
    for obj in objs:
        params += prepare(obj, db)
    row = f"({placeholders(len(fields_))})"
    if keyed or not keys:
        execute(head + ", ".join([row] * len(objs)), params)
        for obj in objs:
            obj._state.adding = False
        return
    pk = model._meta.pk
    if db.features.can_return_rows_from_bulk_insert:
        # The keys come back in the order of the VALUES (what bulk_create relies on).
        sql = head + ", ".join([row] * len(objs)) + f" RETURNING {qn(pk.column)}"
        for obj, (key,) in zip(objs, fetch(sql, params, db), strict=True):
            obj.pk = key
            obj._state.adding = False
        return
    width = len(fields_)
    c = cursor(db)
    for i, obj in enumerate(objs):
        c.execute(head + row, params[i * width : (i + 1) * width])
        obj.pk = c.lastrowid
        obj._state.adding = False


def insert_values(
    model: type[models.Model], names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows given as the values of the fields `names`, in one statement, without
    making an instance of each (nothing is stamped or read back: the caller gives every
    value, dates included)."""
    if not rows:
        return
    fields_, head = _insert_plan(model, tuple(names), False)
    db = default_db()
    columns = tuple(fields_)
    params: list[Any] = []
    for row in rows:
        params += prepared(columns, row, db)
    execute(head + ", ".join([f"({placeholders(len(columns))})"] * len(rows)), params)


@cache
def _update_plan(model: type[models.Model], names: tuple[str, ...]) -> tuple[list, str]:
    meta = model._meta
    fields = [meta.get_field(n) for n in names]
    sets = ", ".join(f"{qn(f.column)} = %s" for f in fields)
    return fields, f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {qn(meta.pk.column)} = %s"  # noqa: S608


def update(objs: Iterable[M], fields: Iterable[str]) -> None:
    """Write `fields` of rows already in the database. An `auto_now` date among the
    fields is stamped as `save()` would. On PostgreSQL, several rows are one statement
    (`UPDATE ... FROM (VALUES ...)`), which locks the rows it has to in an order of the
    plan's choosing: rows that other transactions may be writing are the caller's to lock
    first. Elsewhere, one statement per row, in the given order."""
    objs, fields = list(objs), tuple(fields)
    if not objs or not fields:
        return
    db = default_db()
    if len(objs) > 1 and db.vendor == "postgresql":
        # A row given twice: its last state, as one statement per row would leave it.
        objs = list({obj.pk: obj for obj in objs}.values())
        fields_, head, row, tail = _update_many_plan(type(objs[0]), fields)
        prepare = _preparer(tuple(fields_), False, db.vendor)
        params = []
        for obj in objs:
            params += prepare(obj, db)
            params.append(obj.pk)
        execute(head + ", ".join([row] * len(objs)) + tail, params)
        return
    fields_, text = _update_plan(type(objs[0]), fields)
    prepare = _preparer(tuple(fields_), False, db.vendor)
    rows = [[*prepare(obj, db), obj.pk] for obj in objs]
    c = cursor(db)
    if getattr(c, "numbered", False):
        text = numbered(text)
    if len(rows) == 1:
        c.execute(text, rows[0])
    else:
        c.executemany(text, rows)


@cache
def _update_many_plan(
    model: type[models.Model], names: tuple[str, ...]
) -> tuple[list, str, str, str]:
    """(fields, head, one row of VALUES, tail) of an UPDATE of several rows at once on
    PostgreSQL; each value is cast to its column's type (VALUES would otherwise guess
    it)."""
    db = default_db()
    meta = model._meta
    fields = [meta.get_field(n) for n in names]
    columns = [*fields, meta.pk]
    # Text as `text`: an explicit cast to `varchar(n)` would cut a longer value short,
    # where assigning it to the column refuses it.
    types = ["text" if f.get_internal_type() in _TEXT else f.db_type(db) for f in columns]
    row = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
    aliases = ", ".join([*(qn(f.column) for f in fields), '"pk__"'])
    table = qn(meta.db_table)
    sets = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in fields)
    head = f"UPDATE {table} SET {sets} FROM (VALUES "  # noqa: S608
    tail = f') AS v ({aliases}) WHERE {table}.{qn(meta.pk.column)} = v."pk__"'
    return fields, head, row, tail


def keys_reserve(model: type[models.Model], n: int) -> list[int] | None:
    """`n` new primary keys of `model`'s table, taken from its sequence in one statement,
    for rows the caller inserts later in its transaction (`insert(..., keyed=True)`);
    None where the database has no sequences to take them from (SQLite)."""
    found = keys_reserve_each([(model, n)])
    return None if found is None else found[0]


def keys_reserve_each(wanted: Sequence[tuple[type[models.Model], int]]) -> list[list[int]] | None:
    """`keys_reserve` for several tables in one statement: per (model, n), n new keys,
    ascending."""
    query = keys_reserve_query(wanted)
    return None if query is None else query.run()


def keys_reserve_query(wanted: Sequence[tuple[type[models.Model], int]]) -> Query | None:
    """`keys_reserve_each` as a `Query` (None without sequences)."""
    db = default_db()
    if db.vendor != "postgresql":
        return None
    parts, params = [], []
    for i, (model, n) in enumerate(wanted):
        # The sequence named in the text, not looked up by `pg_get_serial_sequence` for
        # every key: PostgreSQL resolves it once, when it parses the statement (the
        # lookup per key cost 0.13 ms a reservation, 77 µs of its time an order).
        sequence = _sequence_literal(db, model._meta.db_table, model._meta.pk.column)
        parts.append(
            f"SELECT %s::int, nextval({sequence}::regclass) FROM generate_series(1, %s)"  # noqa: S608 (quoted by PostgreSQL)
        )
        params += [i, n]

    def build(rows: list) -> list[list[int]]:
        keys: list[list[int]] = [[] for _ in wanted]
        for i, key in rows:
            keys[i].append(key)
        return [sorted(k) for k in keys]

    return Query(" UNION ALL ".join(parts), params, build)


# (table, column) -> the column's sequence as an SQL literal: a schema's sequence names
# do not change while the process runs.
_sequences: dict[tuple[str, str], str] = {}


def _sequence_literal(db: BaseDatabaseWrapper, table: str, column: str) -> str:
    found = _sequences.get((table, column))
    if found is None:
        with db.cursor() as cursor:
            cursor.execute("SELECT quote_literal(pg_get_serial_sequence(%s, %s))", [table, column])
            (found,) = cursor.fetchone()
        _sequences[table, column] = found
    return found


@contextmanager
def pipeline() -> Iterator[None]:
    """Send the block's statements without waiting for each one's answer (PostgreSQL's
    pipeline mode; elsewhere the block runs as it is): PostgreSQL executes them while the
    next ones are built. A statement whose result is read (a fetch) waits for all before
    it. An error surfaces, as Django's database error, at that read or at the block's end;
    the transaction is then aborted."""
    db = default_db()
    if db.vendor != "postgresql":
        yield
        return
    db.ensure_connection()
    with db.wrap_database_errors, db.connection.pipeline():
        yield
