from django.db import migrations, models


def keys_fill(apps, schema_editor):
    # The application's own function: the keys of existing names must be the ones new
    # names are compared with. A later change to how keys are made needs a migration
    # like this one again.
    from accounts.usernames import username_key

    User = apps.get_model("accounts", "User")
    users = list(User.objects.only("pk", "username"))
    for user in users:
        user.username_key = username_key(user.username)
    User.objects.bulk_update(users, ["username_key"], batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_balance_withdrawing"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.AddField(
            model_name="user",
            name="username_key",
            field=models.CharField(default="", editable=False, max_length=64),
        ),
        migrations.RunPython(keys_fill, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="user",
            index=models.Index(fields=["username_key"], name="user_username_key"),
        ),
    ]
