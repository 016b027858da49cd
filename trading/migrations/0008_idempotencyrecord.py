"""IdempotencyRecord, moved here from `accounts` (accounts/migrations/0008) with its
table, which keeps its name: state only. On a fresh database accounts' own migrations
have created the table by now. Its content type moves with it."""

import django.core.serializers.json
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def content_type_move(from_app: str, to_app: str):
    def move(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        if not ContentType.objects.filter(app_label=to_app, model="idempotencyrecord").exists():
            ContentType.objects.filter(app_label=from_app, model="idempotencyrecord").update(
                app_label=to_app
            )

    return move


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("accounts", "0008_idempotency_moves_out"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("trading", "0007_order_covered"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="IdempotencyRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("key", models.CharField(max_length=255)),
                        ("fingerprint", models.CharField(max_length=64)),
                        ("status_code", models.PositiveSmallIntegerField()),
                        (
                            "body",
                            models.JSONField(
                                encoder=django.core.serializers.json.DjangoJSONEncoder
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "trader",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "accounts_idempotencyrecord",
                        "indexes": [
                            models.Index(fields=["created_at"], name="idempotency_created")
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("trader", "key"), name="idempotency_key_unique"
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(
            content_type_move("accounts", "trading"), content_type_move("trading", "accounts")
        ),
    ]
