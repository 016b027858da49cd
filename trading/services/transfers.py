"""Zero-sum cash transfers between accounts (funding, expiry settlement, the loss of a
liquidated account), with the insurance fund as the buffer.

A payer pays at most what it has available; the insurance fund covers the shortfall
and keeps any rounding remainder; when the fund cannot cover a shortfall, receivers
are paid pro rata less (socialised loss). The rows always sum to exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from accounts.models import Balance, User
from accounts.services import (
    Posting,
    balances_ensure,
    balances_lock,
    ledger_apply,
    system_account_id,
)
from trading.risk import MONEY_QUANTUM


@dataclass(slots=True)
class TransferResult:
    applied: dict[int, Decimal]  # trader pk -> amount actually booked
    insurance: Decimal  # what the insurance fund gained (negative: paid)
    shortfall: Decimal  # what payers could not pay
    socialised: Decimal  # what receivers went without
    balances: list[Balance]


def transfers_settle(
    *,
    amounts: dict[int, Decimal],
    asset: str,
    mode: str,
    reason: str,
    ref: str,
    expected_net: Decimal = Decimal(0),
) -> TransferResult:
    """Book `amounts` (trader pk -> signed amount; negative pays). Caller holds the locks
    that keep the positions behind the amounts still (the book rows).

    `expected_net` is what the amounts are meant to add up to: zero for payments
    between accounts (funding, option payouts); for futures closed at expiry, the
    realized PnL, which settles the open cost basis rather than a counterparty."""
    insurance_id = system_account_id(User.INSURANCE_ACCOUNT)
    keys = [(t, asset, mode) for t in amounts] + [(insurance_id, asset, mode)]
    balances_ensure(keys)
    # Balances in primary-key order, as every writer locks them.
    locked = balances_lock(keys)
    applied: dict[int, Decimal] = {}
    collected = shortfall = Decimal(0)
    for trader_id, amount in amounts.items():
        if amount < 0:
            b = locked[(trader_id, asset, mode)]
            pay = min(-amount, max(Decimal(0), b.total - b.locked))
            applied[trader_id] = -pay
            collected += pay
            shortfall += -amount - pay
    owed = sum((a for a in amounts.values() if a > 0), Decimal(0))
    fund = locked[(insurance_id, asset, mode)]
    pool = collected + max(Decimal(0), fund.total - fund.locked) + expected_net
    factor = Decimal(1) if owed <= pool else pool / owed
    paid = Decimal(0)
    for trader_id, amount in amounts.items():
        if amount > 0:
            credit = (
                amount if factor == 1 else (amount * factor).quantize(MONEY_QUANTUM, ROUND_DOWN)
            )
            applied[trader_id] = credit
            paid += credit
    insurance = collected - paid + expected_net
    postings = [Posting(t, asset, mode, a, reason, ref) for t, a in applied.items() if a]
    if insurance:
        postings.append(Posting(insurance_id, asset, mode, insurance, reason, ref))
    ledger_apply(postings, locked)
    touched = [locked[(p.trader_id, asset, mode)] for p in postings]
    Balance.objects.bulk_update(touched, ["total"])
    return TransferResult(applied, insurance, shortfall, owed - paid, touched)
