from django.db import migrations, models
from django.db.models import Q


def covered_from_reserved(apps, schema_editor):
    """Open option sells that reserve nothing and are not reduce-only are the covered
    sells placed before the flag was stored."""
    Order = apps.get_model("trading", "Order")
    Order.objects.filter(
        Q(status="NEW") | Q(status="PARTIALLY_FILLED"),
        market__kind="OPTION",
        side="SELL",
        reduce_only=False,
        reserved=0,
    ).update(covered=True)


class Migration(migrations.Migration):
    dependencies = [("trading", "0006_bands_trade_mark_sweeps")]

    operations = [
        migrations.AddField(
            model_name="order",
            name="covered",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(covered_from_reserved, migrations.RunPython.noop),
    ]
