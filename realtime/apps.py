from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connect the receivers that turn domain events into channel-layer messages
        # (and accounts' changes into their coalesced updates), and those that end the
        # sockets of a logged-out session.
        from realtime import account_updates, auth, broadcast  # noqa: F401
