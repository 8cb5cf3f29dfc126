"""`manage.py seed_demo`: two environments, one user per role, three realistic features
with believable release histories. Everything goes through the services, so the audit log
and config snapshots are exactly what real use would produce."""
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.core.models import AuditEvent, Environment
from apps.core.roles import ROLES
from apps.core.services import environment_create, roles_ensure
from apps.metrics.demo import demo_impact_seed, demo_telemetry_seed
from apps.prompts.models import Feature, PromptVersion
from apps.prompts.services import feature_create, prompt_version_create
from apps.rollouts import services as rollouts
from apps.rollouts.models import ReleaseRevision
from apps.rollouts.services import segment_upsert

DEMO_PASSWORD = "shipway-demo"

SUMMARIZER_SYSTEM = (
    "You summarise customer support tickets for the agent who picks them up next. "
    "Be factual; never invent order numbers."
)
SUMMARIZER = {
    "1.0.0": ("gpt-4o-mini", {"temperature": 0.3}, "First version: three-sentence summary.",
              "Summarise this ticket in three sentences:\n\n{{ ticket_body }}"),
    "1.1.0": ("gpt-4o-mini", {"temperature": 0.2}, "Bullet points; include the customer's tier.",
              "Customer tier: {{customer_tier}}\nSummarise this ticket as at most 5 bullet points:\n\n"
              "{{ ticket_body }}"),
    "1.2.0": ("gpt-4o-mini", {"temperature": 0.2, "max_tokens": 300},
              "Structured JSON output for the agent console.",
              'Customer tier: {{customer_tier}}\nReturn JSON like {"summary": "...", "sentiment": '
              '"positive|neutral|negative", "next_step": "..."} for this ticket:\n\n{{ ticket_body }}'),
}
REFUND = {
    "1.0.0": ("gpt-4o", {"temperature": 0.4}, "Polite refund reply drafted from policy.",
              "Policy:\n{{ refund_policy }}\n\nDraft a reply to: {{ customer_message }}"),
    "1.1.0": ("gpt-4o", {"temperature": 0.3}, "Cites the policy clause and proposes the amount.",
              "Policy:\n{{ refund_policy }}\n\nOrder total: {{ order_total }}\nDraft a reply to: "
              "{{ customer_message }}\nQuote the clause you rely on."),
}
ROUTER = {
    "2.0.0": ("gpt-4o-mini", {"temperature": 0}, "Route to billing, tech or account.",
              "Classify into billing, tech or account. Answer with one word.\n\n{{ message }}"),
    "2.1.0": ("gpt-4o-mini", {"temperature": 0}, "Adds the 'shipping' queue.",
              "Classify into billing, tech, account or shipping. Answer with one word.\n\n{{ message }}"),
}


# When each seeded release revision happened, in hours before the seed, so the history on the
# pages matches the week of demo telemetry (apps/metrics/demo.py tells the same story).
HISTORY_HOURS_AGO: dict[tuple[str, str], list[float]] = {
    ("ticket-summarizer", "staging"): [200],
    ("ticket-summarizer", "production"): [330, 190, 132, 96, 44, 43],
    ("refund-drafter", "staging"): [120],
    ("refund-drafter", "production"): [330, 70, 36],
    ("support-router", "staging"): [150],
    ("support-router", "production"): [330, 96],
}


class Command(BaseCommand):
    help = "Seed demo environments, users, features and release history (skips if features exist)."

    def handle(self, *args, **options):
        if Feature.objects.exists():
            self.stdout.write("Demo data already present; nothing to do.")
            self._telemetry()  # databases seeded before demo telemetry existed get it now
            return
        roles_ensure()
        users = self._users()
        admin, pm, eng = users["admin"], users["pm"], users["engineer"]
        staging = Environment.objects.filter(key="staging").first() or environment_create(
            key="staging", name="Staging", position=1, actor=admin)
        production = Environment.objects.filter(key="production").first() or environment_create(
            key="production", name="Production", position=2, actor=admin)
        segment_upsert(key="internal", name="Internal staff", actor=admin, match="any", rules=[
            {"attribute": "email", "op": "ends_with", "value": "@example.com"},
            {"attribute": "targetingKey", "op": "in", "values": ["qa-1", "qa-2"]},
        ])

        summarizer = self._feature("ticket-summarizer", "Ticket summarizer", "beta", pm, SUMMARIZER, eng,
                                   "Summarises inbound support tickets for the next agent.",
                                   chat_system=SUMMARIZER_SYSTEM)
        refund = self._feature("refund-drafter", "Refund drafter", "beta", pm, REFUND, eng,
                               "Drafts refund replies for agents to review before sending.")
        router = self._feature("support-router", "Support router", "ga", pm, ROUTER, eng,
                               "Routes each new message to the right support queue.")

        # ticket-summarizer: the latest production change promoted 1.2.0 after its canary.
        rollouts.release_create(feature=summarizer, environment=staging, stable_version="1.2.0", actor=eng)
        rollouts.release_create(feature=summarizer, environment=production, stable_version="1.0.0", actor=eng)
        rollouts.release_set_stable(feature=summarizer, environment=production, version="1.1.0", actor=eng,
                                    reason="Bullet points tested well in staging")
        rollouts.canary_start(feature=summarizer, environment=production, version="1.2.0", percent="5",
                              actor=eng, reason="JSON output for the agent console")
        rollouts.canary_set_percent(feature=summarizer, environment=production, percent="25", actor=eng,
                                    reason="Error rate flat after 2 days at 5 %")
        rollouts.canary_promote(feature=summarizer, environment=production, actor=eng,
                                reason="Healthy at 25 % for 3 days; eval score 0.91")
        rollouts.release_set_review_sample_rate(feature=summarizer, environment=production, rate="0.05",
                                                actor=eng, reason="Keep sampling 5 % for review")

        # refund-drafter: mid-canary at 5 % in production.
        rollouts.release_create(feature=refund, environment=staging, stable_version="1.1.0", actor=eng)
        rollouts.release_create(feature=refund, environment=production, stable_version="1.0.0", actor=eng,
                                review_sample_rate="0.2")
        rollouts.canary_start(feature=refund, environment=production, version="1.1.0", percent="1", actor=eng,
                              reason="Cite policy clauses")
        rollouts.canary_set_percent(feature=refund, environment=production, percent="5", actor=eng,
                                    reason="No complaints at 1 %")

        # support-router: stable.
        rollouts.release_create(feature=router, environment=staging, stable_version="2.1.0", actor=eng)
        rollouts.release_create(feature=router, environment=production, stable_version="2.0.0", actor=eng)
        rollouts.release_set_stable(feature=router, environment=production, version="2.1.0", actor=eng,
                                    reason="Shipping queue opened")

        self._backdate(HISTORY_HOURS_AGO)
        self.stdout.write(self.style.SUCCESS("Demo data seeded."))
        self._telemetry()
        self.stdout.write(f"Logins, password '{DEMO_PASSWORD}' for each: " + ", ".join(ROLES)
                          + " (admin is a superuser; each other user has the role of its name)")

    def _telemetry(self) -> None:
        written = demo_telemetry_seed(days=7)
        if written["rollups"]:
            self.stdout.write(self.style.SUCCESS(
                f"Demo telemetry: {written['rollups']} rollup rows and {written['events']} call events "
                "over the last 7 days."))
        targets = demo_impact_seed()
        if targets["slos"] or targets["definitions"]:
            self.stdout.write(self.style.SUCCESS(
                f"Demo SLOs for {targets['slos']} features; {targets['definitions']} impact metrics with "
                f"{targets['values']} reported values over the last 2 weeks."))

    def _backdate(self, schedule: dict[tuple[str, str], list[float]]) -> None:
        """Seed data only: move the demo's release revisions, their audit events and the
        prompt versions back in time to when the story says they happened. Real history is
        never edited; this runs once, right after the demo was written through the services."""
        now = timezone.now()
        PromptVersion.objects.filter(feature__key__in={k for k, _ in schedule}).update(
            created_at=now - timedelta(hours=340))
        for (feature_key, env_key), hours in schedule.items():
            revisions = ReleaseRevision.objects.filter(
                release__feature__key=feature_key, release__environment__key=env_key).order_by("number")
            audits = AuditEvent.objects.filter(object_key=feature_key, environment__key=env_key,
                                               object_type="release").order_by("id")
            for revision, audit, hours_ago in zip(revisions, audits, hours, strict=False):
                at = now - timedelta(hours=hours_ago)
                ReleaseRevision.objects.filter(pk=revision.pk).update(created_at=at)
                AuditEvent.objects.filter(pk=audit.pk).update(created_at=at)

    def _users(self) -> dict:
        User = get_user_model()
        users = {}
        for role in ROLES:
            user, created = User.objects.get_or_create(
                username=role, defaults={"email": f"{role}@example.com", "is_staff": role == "admin",
                                         "is_superuser": role == "admin"})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
            user.groups.add(Group.objects.get(name=role))
            users[role] = user
        return users

    def _feature(self, key, name, stage, owner, versions, author, description, chat_system=None):
        feature = feature_create(key=key, name=name, stage=stage, owner=owner, actor=owner,
                                 description=description, oncall_contact="#support-ai-oncall",
                                 runbook_url=f"https://runbooks.example.com/{key}")
        for version, (model, params, changelog, text) in versions.items():
            if chat_system:
                prompt_version_create(
                    feature=feature, version=version, model=model, params=params, changelog=changelog,
                    actor=author, fallback_models=["gpt-4o"],
                    messages=[{"role": "system", "content": chat_system}, {"role": "user", "content": text}])
            else:
                prompt_version_create(feature=feature, version=version, model=model, params=params,
                                      changelog=changelog, actor=author, template=text)
        return feature
