"""Zero-sum cash transfers between accounts (funding, expiry settlement, the loss of a
liquidated account), with the insurance fund as the buffer.

A payer pays at most what it has available; the insurance fund covers the shortfall
and keeps any rounding remainder; when the fund cannot cover a shortfall, receivers
are paid pro rata less (socialised loss). The rows always sum to exactly zero. Futures'
realized PnL can owe more than any receiver of the transfer holds (it settles a cost
basis already paid out to others): what the fund cannot take then is refused in REAL
(INSURANCE_FUND_EXHAUSTED) and written off by the paper backstop in PAPER.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerReason, Mode
from ledger.services import (
    INSURANCE_ACCOUNT,
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
    insurance_id = system_account_id(INSURANCE_ACCOUNT)
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
    # The fund may itself be a payer (it holds the positions a paper reset handed it):
    # what it paid as one is no longer there to cover the others.
    fund_paid = -applied.get(insurance_id, Decimal(0))
    pool = collected + max(Decimal(0), fund.total - fund.locked - fund_paid) + expected_net
    # When losses exceed what payers and the fund hold, the pool is negative: receivers
    # get nothing (and with none, owed is 0).
    factor = Decimal(1) if owed <= pool else pool / owed if pool > 0 else Decimal(0)
    paid = Decimal(0)
    for trader_id, amount in amounts.items():
        if amount > 0:
            credit = (
                amount if factor == 1 else (amount * factor).quantize(MONEY_QUANTUM, ROUND_DOWN)
            )
            applied[trader_id] = credit
            paid += credit
    insurance = collected - paid + expected_net
    uncovered = fund.locked - (fund.total + applied.get(insurance_id, Decimal(0)) + insurance)
    if uncovered > 0 and mode != Mode.PAPER:
        # Losses beyond what the payers, the fund and the receivers hold (futures'
        # cost basis already paid out to others): no row can take them. Refused here in
        # words rather than by the balance's constraint; the caller retries once the
        # fund has been topped up.
        raise ExchangeError(
            "INSURANCE_FUND_EXHAUSTED",
            f"{ref}: {uncovered} {asset} of losses that neither the payers nor the "
            "insurance fund can cover",
        )
    postings = [Posting(t, asset, mode, a, reason, ref) for t, a in applied.items() if a]
    if insurance:
        postings.append(Posting(insurance_id, asset, mode, insurance, reason, ref))
    postings += paper_backstop(postings, locked, insurance_id, asset, mode)
    ledger_apply(postings, locked)
    touched = [locked[(p.trader_id, asset, mode)] for p in postings]
    Balance.objects.bulk_update(touched, ["total"])
    return TransferResult(applied, insurance, shortfall, owed - paid, touched)


def paper_backstop(
    postings: list[Posting],
    rows: dict[tuple[int, str, str], Balance],
    insurance_id: int,
    asset: str,
    mode: str,
) -> list[Posting]:
    """The FAUCET row that keeps the PAPER insurance fund from going negative once
    `postings` are applied to the locked `rows`: the fund holds the positions paper
    resets hand it and can lose more on them than it has; paper money is free and a
    system account never goes negative (see accounts/services/paper.py). Nothing in
    REAL mode, or while the fund can pay."""
    key = (insurance_id, asset, mode)
    if mode != Mode.PAPER or key not in rows:
        return []
    fund = rows[key]
    after = fund.total + sum(
        (p.amount for p in postings if (p.trader_id, p.asset, p.mode) == key), Decimal(0)
    )
    if after >= fund.locked:
        return []
    return [
        Posting(insurance_id, asset, mode, fund.locked - after, LedgerReason.FAUCET, "backstop")
    ]
