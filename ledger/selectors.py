"""Reads of the ledger. Nothing here writes; `lock` takes row locks for a writer."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from dexsite import sql
from ledger.models import Balance

# pk -> traderId (None for a system account). Neither ever changes, so each process
# looks an account up once; bounded so that a long-lived process can't grow it forever.
_public_ids: dict[int, uuid.UUID | None] = {}
PUBLIC_IDS_MAX = 200_000


_BALANCE = sql.Columns(Balance)


def balances_of(
    keys: Iterable[tuple[int, str, str]], *, lock: bool = False
) -> dict[tuple[int, str, str], Balance]:
    """The balance rows of (trader, asset, mode) `keys` that exist, in one statement
    (hand-written: the order path reads them for every order). `lock`: FOR UPDATE, in
    primary-key order."""
    keys = set(keys)
    if not keys:
        return {}
    return balances_query(keys, lock=lock).run()


def balances_query(keys: Iterable[tuple[int, str, str]], *, lock: bool = False) -> sql.Query:
    """`balances_of` (some keys) as a `Query`, to be run with others (`sql.run_all`)."""
    # One `trader_id IN (...)` per (asset, mode): a funding over a thousand positions
    # would otherwise build a thousand-term OR.
    groups: dict[tuple[str, str], set[int]] = {}
    for t, a, m in keys:
        groups.setdefault((a, m), set()).add(t)
    where = " OR ".join(
        f'("asset" = %s AND "mode" = %s AND "trader_id" IN ({sql.placeholders(len(ts))}))'
        for ts in groups.values()
    )
    params = [v for (a, m), ts in groups.items() for v in (a, m, *sorted(ts))]
    rows = sql.select_query(_BALANCE, where, params, order_by='"id"', lock=lock)
    return rows._replace(
        build=lambda found: {(b.trader_id, b.asset, b.mode): b for b in rows.build(found)}
    )


def public_trader_ids(
    pks: Iterable[int], *, known: Iterable[AbstractBaseUser] = ()
) -> dict[int, uuid.UUID]:
    """The public traderId of each account (what `trader.<traderId>` channels are named
    by); system accounts are left out. `known`: user rows already in hand."""
    for user in known:
        _public_ids[user.pk] = None if user.is_system else user.trader_id
    pks = set(pks)
    missing = pks - _public_ids.keys()
    if missing:
        if len(_public_ids) > PUBLIC_IDS_MAX:
            _public_ids.clear()
            missing = pks
        rows = (
            get_user_model()
            .objects.filter(pk__in=missing)
            .values_list("pk", "trader_id", "is_system")
        )
        for pk, trader_id, system in rows:
            _public_ids[pk] = None if system else trader_id
    return {pk: uid for pk in pks if (uid := _public_ids.get(pk)) is not None}
