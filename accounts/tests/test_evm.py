"""Token units against ledger amounts: exact where the token can be, never more."""

from decimal import Decimal

from accounts.evm import amount_to_units, units_to_amount

D = Decimal


def test_units_to_a_ledger_amount():
    assert units_to_amount(250_500_000, 6) == D("250.5")
    assert units_to_amount(1, 6) == D("0.000001")
    # 18 decimals: rounded down to the ledger's 12, the dust stays in the vault.
    assert units_to_amount(1_234_567_890_123_456_789, 18) == D("1.234567890123")
    assert units_to_amount(999_999, 18) == 0


def test_a_ledger_amount_in_units_only_where_exact():
    assert amount_to_units(D("120.25"), 6) == 120_250_000
    assert amount_to_units(D("1.0000001"), 6) is None
    assert amount_to_units(D("0.000000000001"), 18) == 1_000_000
