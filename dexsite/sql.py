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
* `update` writes some fields of loaded rows, and `execute` runs any other statement.

Only portable SQL goes through here (it runs on SQLite in the embedded set-up and on
PostgreSQL in production); `FOR UPDATE` is dropped where the database has no row locks
(SQLite locks the whole database for a write transaction instead). Values are always
bound as parameters, never formatted into the text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connection, models

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

    def converters(self) -> list[tuple[int, list[Converter], Any]]:
        """(column index, converters, expression) for each column that needs any, on
        the current database backend."""
        vendor = connection.vendor
        found = self._converters.get(vendor)
        if found is None:
            found = []
            for i, field in enumerate(self.fields):
                col = field.get_col(self.alias)
                convs = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
                if convs:
                    found.append((i, convs, col))
            self._converters[vendor] = found
        return found

    def values(self, row: Sequence[Any], start: int = 0) -> list[Any]:
        values = list(row[start : start + len(self.fields)])
        for i, convs, col in self.converters():
            value = values[i]
            for conv in convs:
                value = conv(value, col, connection)
            values[i] = value
        return values

    def build(self, row: Sequence[Any], start: int = 0) -> M:
        return self.model.from_db(connection.alias, self.attnames, self.values(row, start))


def _lock_clause() -> str:
    return " FOR UPDATE" if connection.features.has_select_for_update else ""


def cursor() -> Any:
    """The connection's cursor, opened once and reused: opening one costs about as much
    Python as running a short statement. (A fresh one while statements are being
    captured, e.g. by `CaptureQueriesContext`, so that they are seen.)"""
    if connection.queries_logged:
        return connection.cursor()
    raw = connection.connection
    held = getattr(connection, "_sql_cursor", None)
    if raw is None or held is None or held[0] is not raw or getattr(held[1].cursor, "closed", 0):
        wrapper = connection.cursor()
        connection._sql_cursor = held = (connection.connection, wrapper)
    return held[1]


def fetch(sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    c = cursor()
    c.execute(sql, params)
    return c.fetchall()


def execute(sql: str, params: Sequence[Any] = ()) -> int:
    """Run a statement; returns the number of rows it changed."""
    c = cursor()
    c.execute(sql, params)
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
    table = qn(columns.model._meta.db_table)
    sql = f"SELECT {columns.sql} FROM {table} WHERE {where}"  # noqa: S608 (bound values)
    if order_by:
        sql += f" ORDER BY {order_by}"
    if lock:
        sql += _lock_clause()
    return [columns.build(row) for row in fetch(sql, params)]


@cache
def _insert_plan(model: type[models.Model], names: tuple[str, ...]) -> tuple[list, str]:
    meta = model._meta
    fields = [meta.get_field(n) for n in names]
    cols = ", ".join(qn(f.column) for f in fields)
    return fields, f"INSERT INTO {qn(meta.db_table)} ({cols}) VALUES "  # noqa: S608


def insert(objs: Sequence[M], fields: Iterable[str] | None = None) -> None:
    """Insert new rows of one model in one statement and set their primary keys.
    `fields` are the columns written, by default every concrete field but the key (an
    `auto_now`/`auto_now_add` date among them is stamped as `save()` would)."""
    if not objs:
        return
    model = type(objs[0])
    if fields is None:
        fields = [f.name for f in model._meta.concrete_fields if not f.primary_key]
    fields_, head = _insert_plan(model, tuple(fields))
    params: list[Any] = []
    for obj in objs:
        for f in fields_:
            params.append(f.get_db_prep_save(f.pre_save(obj, True), connection))
    row = f"({placeholders(len(fields_))})"
    pk = model._meta.pk
    if connection.features.can_return_rows_from_bulk_insert:
        sql = head + ", ".join([row] * len(objs)) + f" RETURNING {qn(pk.column)}"
        for obj, (key,) in zip(objs, fetch(sql, params), strict=True):
            obj.pk = key
            obj._state.adding = False
        return
    width = len(fields_)
    c = cursor()
    for i, obj in enumerate(objs):
        c.execute(head + row, params[i * width : (i + 1) * width])
        obj.pk = c.lastrowid
        obj._state.adding = False


@cache
def _update_plan(model: type[models.Model], names: tuple[str, ...]) -> tuple[list, str]:
    meta = model._meta
    fields = [meta.get_field(n) for n in names]
    sets = ", ".join(f"{qn(f.column)} = %s" for f in fields)
    return fields, f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {qn(meta.pk.column)} = %s"  # noqa: S608


def update(objs: Iterable[M], fields: Iterable[str]) -> None:
    """Write `fields` of rows already in the database, one statement per row sent
    together (psycopg pipelines an executemany: one round trip). An `auto_now` date
    among the fields is stamped as `save()` would."""
    objs = list(objs)
    if not objs:
        return
    fields_, text = _update_plan(type(objs[0]), tuple(fields))
    rows = [
        [*(f.get_db_prep_save(f.pre_save(obj, False), connection) for f in fields_), obj.pk]
        for obj in objs
    ]
    c = cursor()
    if len(rows) == 1:
        c.execute(text, rows[0])
    else:
        c.executemany(text, rows)
