"""What the apps' admin classes share. Imports no app."""


class ReadOnly:
    """A model admin (or inline) that shows rows but lets no one add, change or delete
    them, staff included: changes go through the services, by the admin's actions."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
