"""The admin's placeholder models: unmanaged, so this creates no table (``sqlmigrate``: no-op).

The migration exists so that ``migrate`` knows the models; Django's ``post_migrate``
handler then creates their content types and permissions (see docs/admin.md).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Node",
            fields=[
                ("id", models.CharField(max_length=32, primary_key=True, serialize=False)),
            ],
            options={
                "managed": False,
                "default_permissions": ("view",),
            },
        ),
        migrations.CreateModel(
            name="Room",
            fields=[
                ("name", models.CharField(max_length=100, primary_key=True, serialize=False)),
            ],
            options={
                "managed": False,
                "default_permissions": ("view", "change"),
            },
        ),
    ]
