from django.db import migrations, models
from django.db.models import Sum


def withdrawing_from_pending(apps, schema_editor):
    """What pending withdrawals hold, on the balance rows they hold it on."""
    Balance = apps.get_model("accounts", "Balance")
    Transfer = apps.get_model("accounts", "Transfer")
    pending = (
        Transfer.objects.filter(kind="WITHDRAWAL", status="PENDING")
        .values("trader_id", "asset", "mode")
        .annotate(s=Sum("amount"))
    )
    for row in pending:
        Balance.objects.filter(
            trader_id=row["trader_id"], asset=row["asset"], mode=row["mode"]
        ).update(withdrawing=row["s"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_drop_redundant_fk_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="balance",
            name="withdrawing",
            field=models.DecimalField(decimal_places=12, default=0, db_default=0, max_digits=38),
        ),
        migrations.RunPython(withdrawing_from_pending, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="balance",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("withdrawing__gte", 0), ("withdrawing__lte", models.F("locked"))
                ),
                name="balance_withdrawing_within_locked",
            ),
        ),
    ]
