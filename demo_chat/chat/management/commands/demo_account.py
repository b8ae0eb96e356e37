"""``manage.py demo_account USERNAME``: create or reset the demo's staff account.

The password comes from the ``DEMO_ACCOUNT_PASSWORD`` environment variable, never from
the command line, where any local user could read it (``ps``).
"""

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

PASSWORD_VARIABLE = "DEMO_ACCOUNT_PASSWORD"


class Command(BaseCommand):
    help = (
        f"Create (or reset the password of) a superuser for the demo, with the password "
        f"in ${PASSWORD_VARIABLE}. Demo use only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get(PASSWORD_VARIABLE)
        if not password:
            raise CommandError(f"Set {PASSWORD_VARIABLE} to the account's password")
        user, created = get_user_model().objects.get_or_create(username=options["username"])
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(f"{'Created' if created else 'Reset'} {user.get_username()}")
