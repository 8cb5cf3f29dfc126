"""Mint an SDK key for one environment; the key is printed once, as the last line."""
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ShipwayError
from apps.core.models import SdkKey
from apps.core.selectors import environment_get
from apps.core.services import sdk_key_create


class Command(BaseCommand):
    help = "Create an SDK key for ENV and print it (shown once; only its SHA-256 is stored)."

    def add_arguments(self, parser):
        parser.add_argument("environment")
        parser.add_argument("--scopes", nargs="+", default=list(SdkKey.SCOPES), choices=SdkKey.SCOPES)
        parser.add_argument("--name", default="cli")

    def handle(self, *args, environment, scopes, name, **options):
        try:
            env = environment_get(key=environment)
            key, secret = sdk_key_create(environment=env, name=name, scopes=scopes)
        except ShipwayError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"SDK key '{key.name}' for {env.key} with scopes {', '.join(key.scopes)}:")
        self.stdout.write(secret)
