from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The vault's checks join the exchange's checker, which lives in trading, the
        # layer below, and so cannot import them itself.
        from accounts import invariants
        from trading.invariants import check_register

        check_register(invariants.withdrawals_held)
        check_register(invariants.transfers_booked)
        # A paper reset writes the account's books: the matcher carries it out.
        from accounts.services.paper import PAPER_RESET_JOB, paper_reset_job
        from trading.matcher.requests import job_register

        job_register(PAPER_RESET_JOB, paper_reset_job)
