"""Staff views of accounts: traders, balances, the ledger, the fee and insurance
accounts, linked wallets, API keys, the vault's deposits and withdrawals (with the
actions that move money) and the solvency panel.

Everything is read-only but through the actions, and the actions call the same services
the API does, so a deposit confirmed here is credited exactly like one confirmed by
`manage.py confirm_deposit`. Money-moving actions need the model's change permission.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from accounts import selectors
from accounts.chain import chain_adapter
from accounts.models import (
    ApiKey,
    ChainDeployment,
    ChainDeposit,
    Deposit,
    LinkedWallet,
    SolvencyReport,
    SystemBalance,
    TransferStatus,
    User,
    Withdrawal,
)
from accounts.services import vault
from dexsite.admin import ReadOnly
from dexsite.errors import ExchangeError
from ledger.models import Balance, LedgerEntry
from trading.presenters import dec


class TraderFilter(admin.SimpleListFilter):
    """A box to type a username into: a list of every trader would not fit a sidebar."""

    title = "trader"
    parameter_name = "trader"
    template = "admin/accounts/input_filter.html"

    def lookups(self, request, model_admin):
        # Django shows a filter only when it has lookups; the box is the one lookup.
        return [("", "")]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(trader__username__iexact=self.value().strip())
        return queryset

    def choices(self, changelist):
        yield {
            "value": self.value() or "",
            "others": [(k, v) for k, v in changelist.params.items() if k != self.parameter_name],
        }


class LinkedWalletInline(ReadOnly, admin.TabularInline):
    model = LinkedWallet
    fields = ("address", "linked_at", "unlinked_at")
    readonly_fields = fields
    extra = 0


@admin.register(User)
class TraderAdmin(UserAdmin):
    list_display = ("username", "trader_id", "is_staff", "is_system", "date_joined")
    list_filter = (*UserAdmin.list_filter, "is_system")
    readonly_fields = ("trader_id", "paper_points_from", "last_faucet_at")
    fieldsets = (
        *UserAdmin.fieldsets,
        ("Exchange", {"fields": ("trader_id", "is_system", "last_faucet_at", "paper_points_from")}),
    )
    inlines = [LinkedWalletInline]


@admin.register(Balance)
class BalanceAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("trader", "asset", "mode", "total", "locked")
    list_filter = (TraderFilter, "mode", "asset", "trader__is_system")
    search_fields = ("trader__username",)
    list_select_related = ("trader",)


@admin.register(SystemBalance)
class SystemBalanceAdmin(ReadOnly, admin.ModelAdmin):
    """The fee account and the insurance fund, per asset and mode."""

    list_display = ("trader", "asset", "mode", "total", "locked")
    list_filter = ("trader", "mode", "asset")
    list_select_related = ("trader",)

    def get_queryset(self, request):
        return super().get_queryset(request).filter(trader__is_system=True)


@admin.register(LedgerEntry)
class LedgerAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "trader", "asset", "mode", "amount", "reason", "ref", "created_at")
    list_filter = (TraderFilter, "mode", "asset", "reason")
    search_fields = ("trader__username", "ref")
    list_select_related = ("trader",)


@admin.register(LinkedWallet)
class LinkedWalletAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("address", "trader", "linked_at", "unlinked_at")
    list_filter = (TraderFilter, ("unlinked_at", admin.EmptyFieldListFilter))
    search_fields = ("address", "trader__username")
    list_select_related = ("trader",)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("prefix", "trader", "name", "scopes", "source", "created_at", "revoked_at")
    list_filter = (TraderFilter, "source", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "trader__username", "name")
    list_select_related = ("trader",)
    exclude = ("key_hash",)


class TransferAdmin(ReadOnly, admin.ModelAdmin):
    list_display = (
        "id",
        "trader",
        "asset",
        "amount",
        "status",
        "on_chain",
        "tx_hash",
        "created_at",
        "decided_at",
        "decided_by",
    )
    list_filter = ("status", "asset", TraderFilter)
    search_fields = ("tx_hash", "trader__username", "address")
    list_select_related = ("trader", "decided_by")
    ordering = ("-id",)

    @admin.display(description="on chain")
    def on_chain(self, transfer) -> str:
        """Where the chain is with it: the watcher's view of a deposit's event, the
        signer's of a withdrawal; a dash where staff handle it by hand."""
        chain_deposit = getattr(transfer, "chain_deposit", None)
        if chain_deposit is not None:
            return f"{chain_deposit.status} in block {chain_deposit.block_number}"
        if transfer.status == TransferStatus.SENDING:
            return f"sent {transfer.tx_hash}" if transfer.tx_hash else "to be sent"
        if transfer.status == TransferStatus.PENDING and transfer.note:
            return transfer.note
        return "—"

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"accounts.change_{self.opts.model_name}")

    def _each_pending(self, request: HttpRequest, queryset: QuerySet, decide) -> None:
        done, refused = 0, []
        for transfer in queryset.filter(status=TransferStatus.PENDING).order_by("id"):
            try:
                decide(transfer)
                done += 1
            except ExchangeError as e:
                refused.append(f"#{transfer.pk}: {e.message}")
        skipped = queryset.exclude(status=TransferStatus.PENDING).count()
        self.message_user(request, f"{done} done, {skipped} not pending (skipped).")
        if refused:
            self.message_user(request, "Refused: " + "; ".join(refused), messages.ERROR)


@admin.register(Deposit)
class DepositAdmin(TransferAdmin):
    actions = ("confirm", "reject")
    list_select_related = ("trader", "decided_by", "chain_deposit")

    @admin.action(description="Confirm: credit the trader (once)", permissions=["decide"])
    def confirm(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each_pending(
            request,
            queryset,
            lambda d: vault.deposit_confirm(deposit_id=d.pk, by=request.user),
        )

    @admin.action(description="Reject: no such transaction, credit nothing", permissions=["decide"])
    def reject(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each_pending(
            request,
            queryset,
            lambda d: vault.deposit_reject(
                deposit_id=d.pk, by=request.user, note="rejected by staff"
            ),
        )


@admin.register(Withdrawal)
class WithdrawalAdmin(TransferAdmin):
    list_display = (*TransferAdmin.list_display[:5], "address", *TransferAdmin.list_display[5:])
    actions = ("approve", "reject")

    @admin.action(
        description="Approve: send the funds (the vault contract) or record the hash sent",
        permissions=["decide"],
    )
    def approve(self, request: HttpRequest, queryset: QuerySet):
        if chain_adapter().sends_withdrawals:
            # The vault contract pays them: the watcher's signer sends and records.
            self._each_pending(
                request,
                queryset,
                lambda w: vault.withdrawal_send_approve(withdrawal_id=w.pk, by=request.user),
            )
            return None
        pending = list(queryset.filter(status=TransferStatus.PENDING).select_related("trader"))
        for w in pending:
            w.display_amount = dec(w.amount)
        if "apply" not in request.POST:
            # First step: ask for each withdrawal's outgoing transaction hash.
            return TemplateResponse(
                request,
                "admin/accounts/withdrawal/approve.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Approve withdrawals",
                    "opts": self.opts,
                    "withdrawals": pending,
                    "selected": queryset.values_list("pk", flat=True),
                },
            )
        self._each_pending(
            request,
            queryset,
            lambda w: vault.withdrawal_approve(
                withdrawal_id=w.pk,
                tx_hash=request.POST.get(f"tx_{w.pk}", "").strip(),
                by=request.user,
            ),
        )
        return None

    @admin.action(description="Reject: release the locked funds", permissions=["decide"])
    def reject(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each_pending(
            request,
            queryset,
            lambda w: vault.withdrawal_reject(
                withdrawal_id=w.pk, by=request.user, note="rejected by staff"
            ),
        )


@admin.register(ChainDeposit)
class ChainDepositAdmin(ReadOnly, admin.ModelAdmin):
    """Every Deposit event of the vault contract the watcher read: SEEN (not final yet),
    CREDITED (its transfer), HELD (for staff: no such trader, or an amount the ledger
    cannot hold) or DROPPED (gone in a reorganisation)."""

    list_display = (
        "id",
        "status",
        "asset",
        "units",
        "trader_ref",
        "sender",
        "tx_hash",
        "log_index",
        "block_number",
        "transfer",
        "note",
    )
    list_filter = ("status", "asset")
    search_fields = ("tx_hash", "sender", "trader_ref")
    list_select_related = ("transfer",)
    ordering = ("-id",)


@admin.register(ChainDeployment)
class ChainDeploymentAdmin(ReadOnly, admin.ModelAdmin):
    list_display = (
        "id",
        "chain_id",
        "vault",
        "signer",
        "deployed_block",
        "scanned_block",
        "created_at",
    )
    ordering = ("-id",)


@admin.register(SolvencyReport)
class SolvencyAdmin(ReadOnly, admin.ModelAdmin):
    """Per asset and mode: what accounts hold against what entered and left."""

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return TemplateResponse(
            request,
            "admin/accounts/solvency.html",
            {
                **self.admin_site.each_context(request),
                "title": "Solvency",
                "opts": self.opts,
                "rows": [
                    {k: dec(v) if isinstance(v, Decimal) else v for k, v in row.items()}
                    for row in selectors.solvency_report()
                ],
            },
        )
