from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "apps.rollouts"
    label = "rollouts"
    verbose_name = "Rollouts"

    def ready(self) -> None:
        # metrics must not import rollouts: it signals budget changes and we rebuild here.
        from apps.metrics.budgets import budget_served_changed
        from apps.rollouts.snapshot import budget_served_changed_receiver

        budget_served_changed.connect(budget_served_changed_receiver, dispatch_uid="rollouts.budget_snapshot")
