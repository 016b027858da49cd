"""The vault's invariants: deposits and withdrawals against the ledger and the balances.
Part of the exchange's checker (`trading.invariants.check_invariants`, which this app
extends from `AccountsConfig.ready`: trading, the layer below, does not import it)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from django.db.models import Q, Sum

from accounts.models import Transfer, TransferKind, TransferStatus
from ledger.models import Balance, LedgerEntry, LedgerReason

ZERO = Decimal(0)


def withdrawals_held(problems: list[str]) -> None:
    """The part of a balance that pending withdrawals hold is its `withdrawing` (the
    rest of `locked` is the open orders', trading's check)."""
    withdrawing: dict[tuple, Decimal] = defaultdict(Decimal)
    for r in (
        Transfer.objects.filter(kind=TransferKind.WITHDRAWAL, status=TransferStatus.PENDING)
        .values("trader_id", "asset", "mode")
        .annotate(s=Sum("amount"))
    ):
        withdrawing[(r["trader_id"], r["asset"], r["mode"])] += r["s"]
    for b in Balance.objects.filter(withdrawing__gt=0):
        key = (b.trader_id, b.asset, b.mode)
        if withdrawing.pop(key, ZERO) != b.withdrawing:
            problems.append(f"balance {key} withdrawing {b.withdrawing} != pending withdrawals")
    for key, s in withdrawing.items():
        problems.append(f"pending withdrawals hold {s} of {key}, withdrawing says 0")


def transfers_booked(problems: list[str]) -> None:
    """Deposits and withdrawals against the ledger: a confirmed deposit is one DEPOSIT
    row of its amount, an approved withdrawal one WITHDRAWAL row of minus its amount;
    a pending or rejected transfer moved nothing; no WITHDRAWAL row stands alone."""
    booked: dict[tuple[str, int], list[tuple[int, str, str, Decimal]]] = defaultdict(list)
    for trader_id, asset, mode, amount, reason, ref in LedgerEntry.objects.filter(
        Q(reason=LedgerReason.WITHDRAWAL)
        | Q(reason=LedgerReason.DEPOSIT, ref__startswith="deposit:")
    ).values_list("trader_id", "asset", "mode", "amount", "reason", "ref"):
        kind, _, pk = ref.partition(":")
        if (reason == LedgerReason.WITHDRAWAL and kind != "withdrawal") or not pk.isdigit():
            problems.append(f"{reason} ledger row of trader {trader_id} refers to {ref!r}")
            continue
        booked[(kind, int(pk))].append((trader_id, asset, mode, amount))
    for t in Transfer.objects.all():
        kind = "deposit" if t.kind == TransferKind.DEPOSIT else "withdrawal"
        rows = booked.pop((kind, t.pk), [])
        done = TransferStatus.CONFIRMED if kind == "deposit" else TransferStatus.APPROVED
        sign = 1 if kind == "deposit" else -1
        expected = [(t.trader_id, t.asset, t.mode, sign * t.amount)] if t.status == done else []
        if rows != expected:
            problems.append(f"{kind} {t.pk} ({t.status}) booked as {rows}, expected {expected}")
    for (kind, pk), rows in booked.items():
        problems.append(f"ledger rows for {kind} {pk}, which does not exist: {rows}")
