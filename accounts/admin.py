from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import Balance, LedgerEntry, User


@admin.register(User)
class TraderAdmin(UserAdmin):
    list_display = ("username", "trader_id", "is_staff", "is_system", "date_joined")
    readonly_fields = ("trader_id",)
    fieldsets = (*UserAdmin.fieldsets, ("Exchange", {"fields": ("trader_id", "is_system")}))


@admin.register(Balance)
class BalanceAdmin(admin.ModelAdmin):
    list_display = ("trader", "asset", "mode", "total", "locked")
    list_filter = ("mode", "asset")
    search_fields = ("trader__username",)
    list_select_related = ("trader",)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LedgerEntry)
class LedgerAdmin(admin.ModelAdmin):
    list_display = ("id", "trader", "asset", "mode", "amount", "reason", "ref", "created_at")
    list_filter = ("mode", "asset", "reason")
    search_fields = ("trader__username", "ref")
    list_select_related = ("trader",)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
