"""Reads of the accounts app. Nothing here writes or locks."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import DecimalField, F, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import ApiKey, LinkedWallet, Transfer, TransferKind, TransferStatus, User
from dexsite.api import page_token, page_value
from ledger.models import Balance, LedgerEntry, LedgerReason, Mode
from trading.models import Position
from trading.presenters import dec, ms

# paperPoints: the trader's PAPER trading result in USDC since their first faucet grant
# (or their last reset): every USDC ledger row but money entering or leaving. For perps
# and futures that is realized PnL, fees and funding; spot holdings and options count at
# what they cost until sold, closed or settled. No trade mints points: what one account
# gains, another pays.
POINTS_ASSET = "USDC"
EXTERNAL_REASONS = (
    LedgerReason.DEPOSIT,
    LedgerReason.WITHDRAWAL,
    LedgerReason.FAUCET,
    LedgerReason.PAPER_RESET,
)
POINTS_REASONS = tuple(r for r in LedgerReason.values if r not in EXTERNAL_REASONS)
_ZERO = Value(Decimal(0), output_field=DecimalField(max_digits=38, decimal_places=12))


def paper_points(*, trader: User) -> Decimal:
    if trader.paper_points_from is None:
        return Decimal(0)
    total = LedgerEntry.objects.filter(
        trader=trader,
        mode=Mode.PAPER,
        asset=POINTS_ASSET,
        reason__in=POINTS_REASONS,
        id__gt=trader.paper_points_from,
    ).aggregate(s=Sum("amount"))["s"]
    return total or Decimal(0)


def paper_faucet_wait(*, trader: User, now: datetime | None = None) -> int | None:
    """Seconds (whole, rounded up) until `trader` may use the paper faucet again, or
    None where they may now."""
    last = User.objects.values_list("last_faucet_at", flat=True).get(pk=trader.pk)
    if last is None:
        return None
    left = last + timedelta(seconds=settings.PAPER_FAUCET_COOLDOWN) - (now or timezone.now())
    return int(left.total_seconds()) + 1 if left > timedelta(0) else None


def linked_wallets(*, trader: User) -> list[str]:
    return list(
        LinkedWallet.objects.filter(trader=trader, unlinked_at__isnull=True)
        .order_by("id")
        .values_list("address", flat=True)
    )


def trader_summary(*, trader: User) -> dict[str, Any]:
    return {
        "traderId": str(trader.trader_id),
        "username": trader.username,
        "linkedWallets": linked_wallets(trader=trader),
        "paperPoints": dec(paper_points(trader=trader)),
    }


def paper_leaderboard(*, limit: int, next_token: str | None) -> dict[str, Any]:
    """Traders ranked by paperPoints, best first. Offset-paginated: a ranking reorders
    itself as trades happen, so a page is a snapshot of its moment."""
    offset = page_value("r", next_token) if next_token else 0
    points = Coalesce(
        Sum(
            "ledger__amount",
            filter=Q(
                ledger__mode=Mode.PAPER,
                ledger__asset=POINTS_ASSET,
                ledger__reason__in=POINTS_REASONS,
                ledger__id__gt=F("paper_points_from"),
            ),
        ),
        _ZERO,
    )
    rows = list(
        User.objects.filter(is_system=False, paper_points_from__isnull=False)
        .annotate(points=points)
        .order_by("-points", "id")
        .values_list("username", "points")[offset : offset + limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "results": [
            {"rank": offset + i + 1, "username": name, "paperPoints": dec(pts)}
            for i, (name, pts) in enumerate(rows)
        ],
        "nextToken": page_token("r", offset + limit) if more else None,
    }


def transfer_dict(t: Transfer) -> dict[str, Any]:
    return {
        "id": t.pk,
        "type": t.kind,
        "asset": t.asset,
        "mode": t.mode,
        "amount": dec(t.amount),
        "status": t.status,
        "txHash": t.tx_hash,
        "address": t.address or None,
        "note": t.note or None,
        "createdAt": ms(t.created_at),
        "decidedAt": ms(t.decided_at),
    }


def vault_info() -> dict[str, Any]:
    """Where a wallet sends deposits: the vault contract in use on the configured chain,
    or nulls where no chain is watched (deposits are then notices for staff)."""
    from accounts.evm import chain_configured, deployment_current

    deployment = deployment_current() if chain_configured() else None
    tokens = deployment.tokens if deployment is not None else {}
    return {
        "chainId": deployment.chain_id if deployment else None,
        "chainName": settings.CHAIN_NAME if deployment else None,
        "rpcUrl": settings.CHAIN_PUBLIC_RPC_URL if deployment else None,
        "vaultAddress": deployment.vault if deployment else None,
        "assets": [
            {
                "asset": asset,
                "token": tokens.get(asset, {}).get("address"),
                "decimals": tokens.get(asset, {}).get("decimals"),
            }
            for asset in settings.VAULT_ASSETS
        ],
        "confirmations": settings.CHAIN_CONFIRMATIONS if deployment else None,
        "development": bool(deployment) and settings.CHAIN_DEVELOPMENT,
    }


def transfers_page(*, trader: User, limit: int, next_token: str | None) -> dict[str, Any]:
    """Own deposits and withdrawals, newest first, keyset-paginated by id like /fills."""
    qs = Transfer.objects.filter(trader=trader)
    if next_token:
        qs = qs.filter(id__lt=page_value("t", next_token))
    rows = list(qs.order_by("-id")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "results": [transfer_dict(t) for t in rows],
        "nextToken": page_token("t", rows[-1].pk) if more else None,
    }


def api_key_dict(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.pk,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": sorted(key.scope_set),
        "createdAt": ms(key.created_at),
        "lastUsedAt": ms(key.last_used_at),
        "revokedAt": ms(key.revoked_at),
    }


def api_keys_list(*, trader: User) -> list[dict[str, Any]]:
    keys = ApiKey.objects.filter(trader=trader, revoked_at__isnull=True).order_by("-id")
    return [api_key_dict(k) for k in keys]


def solvency_report() -> list[dict[str, Any]]:
    """Per asset and mode: what accounts hold against what entered and left.

    held = balances of everyone, system accounts included;
    external = deposits - withdrawals + faucet credits - paper resets (ledger rows);
    held must equal external + the cost basis of open positions (USDC), since trading
    only moves money between accounts and into or out of positions' cost.
    `gap` is the difference, zero on a healthy exchange.
    """
    ledger = {
        (r["asset"], r["mode"]): r
        for r in LedgerEntry.objects.values("asset", "mode").annotate(
            # deposit, withdrawal, faucet, paper_reset
            **{r.lower(): Sum("amount", filter=Q(reason=r)) for r in EXTERNAL_REASONS}
        )
    }
    held = {
        (r["asset"], r["mode"]): r
        for r in Balance.objects.values("asset", "mode").annotate(
            held=Sum("total"),
            held_locked=Sum("locked"),
            held_system=Sum("total", filter=Q(trader__is_system=True)),
        )
    }
    pending = {
        (r["asset"], r["mode"], r["kind"]): r["s"]
        for r in Transfer.objects.filter(status=TransferStatus.PENDING)
        .values("asset", "mode", "kind")
        .annotate(s=Sum("amount"))
    }
    # Option premiums move in cash at each fill: only perps and futures carry a cost.
    open_cost = dict(
        Position.objects.exclude(market__kind="OPTION")
        .values("mode")
        .annotate(s=Sum("open_notional"))
        .values_list("mode", "s")
    )
    zero = Decimal(0)
    out = []
    for asset, mode in sorted(set(ledger) | set(held)):
        lr = ledger.get((asset, mode), {})
        hr = held.get((asset, mode), {})
        deposits = lr.get("deposit") or zero
        withdrawals = -(lr.get("withdrawal") or zero)
        faucet = lr.get("faucet") or zero
        resets = -(lr.get("paper_reset") or zero)
        external = deposits - withdrawals + faucet - resets
        cost = (open_cost.get(mode) or zero) if asset == "USDC" else zero
        total = hr.get("held") or zero
        out.append(
            {
                "asset": asset,
                "mode": mode,
                "balances": total,
                "locked": hr.get("held_locked") or zero,
                "systemAccounts": hr.get("held_system") or zero,
                "deposits": deposits,
                "withdrawals": withdrawals,
                "faucet": faucet,
                "paperResets": resets,
                "external": external,
                "openPositionCost": cost,
                "pendingDeposits": pending.get((asset, mode, TransferKind.DEPOSIT), zero),
                "pendingWithdrawals": pending.get((asset, mode, TransferKind.WITHDRAWAL), zero),
                "gap": total - external - cost,
            }
        )
    return out
