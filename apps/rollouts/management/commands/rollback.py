"""`manage.py rollback FEATURE --env ENV`: the on-call rollback from a shell."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ShipwayError
from apps.core.selectors import environment_get
from apps.prompts.selectors import feature_get
from apps.rollouts.selectors import release_get_current
from apps.rollouts.services import release_rollback, rollback_describe, rollback_plan


class Command(BaseCommand):
    help = "Roll FEATURE back in ENV: take its newest prompt version off the air."

    def add_arguments(self, parser):
        parser.add_argument("feature")
        parser.add_argument("--env", required=True)
        parser.add_argument("--user", help="Act as this user (their roles are checked)")
        parser.add_argument("--reason", default="")
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be served")

    def handle(self, *args, feature, env, user, reason, dry_run, **options):
        try:
            actor = None
            if user:
                try:
                    actor = get_user_model().objects.get(username=user)
                except get_user_model().DoesNotExist:
                    raise CommandError(f"Unknown user '{user}'") from None
            feat, environment = feature_get(key=feature), environment_get(key=env)
            release = release_get_current(feature=feat, environment=environment)
            current, target, victim = rollback_plan(release=release)
            plan = rollback_describe(current=current, target=target)
            if dry_run:
                self.stdout.write(f"Would roll back v{victim.version}. Afterwards: {plan}")
                return
            result = release_rollback(feature=feat, environment=environment, actor=actor,
                                      expected_revision=current.number,
                                      reason=reason or "Rolled back from the command line")
        except ShipwayError as exc:
            raise CommandError(exc.message) from None
        rev = result.revision
        self.stdout.write(self.style.SUCCESS(
            f"Rolled back v{result.marked.version}: revision {rev.number} by {rev.created_by_label}. "
            f"Now serving: {plan}"
        ))
