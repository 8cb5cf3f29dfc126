"""Two people acting at once on real Postgres: no lost update, the second gets a clear 409."""

import pytest

from apps.core.errors import Conflict
from apps.rollouts import services as rollouts
from apps.rollouts.models import ConfigSnapshot, ReleaseRevision
from tests.conftest import ON_POSTGRES, race, skip_or_fail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgres_only():
    if not ON_POSTGRES:
        skip_or_fail("needs real row locks and concurrent connections: set DATABASE_URL=postgres://...")



def test_release_rollback__two_at_once__one_wins(release, envs, personas):
    prod = envs["production"]
    rollouts.canary_start(feature=release.feature, environment=prod, version="1.1.0", percent="5",
                          actor=personas["engineer"])

    def rollback(who):
        return lambda: rollouts.release_rollback(feature=release.feature, environment=prod,
                                                 actor=personas[who], expected_revision=2)

    results = race(rollback("oncall"), rollback("admin"))
    wins = [r for r in results if not isinstance(r, Exception)]
    losses = [r for r in results if isinstance(r, Exception)]
    assert len(wins) == 1, results
    assert len(losses) == 1 and isinstance(losses[0], Conflict)
    assert losses[0].code == "stale_revision"
    assert ReleaseRevision.objects.filter(release=release).count() == 3


def test_release_rollback__many_at_once_without_expected_revision__never_walks_twice(release, envs, personas):
    """Even callers that send no expected_revision serialise on the row lock: each sees the
    previous one's revision, so three at once walk back step by step, never skip."""
    prod = envs["production"]
    eng = personas["engineer"]
    rollouts.release_set_stable(feature=release.feature, environment=prod, version="1.1.0", actor=eng)
    rollouts.release_set_stable(feature=release.feature, environment=prod, version="1.2.0", actor=eng)
    results = race(*[lambda: rollouts.release_rollback(feature=release.feature, environment=prod,
                                                        actor=personas["oncall"]) for _ in range(3)])
    ok = [r for r in results if not isinstance(r, Exception)]
    assert sorted(r.marked.version for r in ok) == ["1.1.0", "1.2.0"]
    assert [type(r) for r in results if isinstance(r, Exception)] == [Conflict]
    release.refresh_from_db()
    assert release.current_revision.stable_version.version == "1.0.0"


def test_changes_to_two_releases_at_once__environment_revision_counts_both(release, envs, personas, feature):
    from apps.prompts.services import feature_create, prompt_version_create

    prod = envs["production"]
    other = feature_create(key="other", name="Other")
    prompt_version_create(feature=other, version="1.0.0", model="m", template="x")
    rollouts.release_create(feature=other, environment=prod, stable_version="1.0.0")
    before = ConfigSnapshot.objects.get(environment=prod).revision
    results = race(
        lambda: rollouts.release_set_enabled(feature=feature, environment=prod, enabled=False,
                                             actor=personas["oncall"]),
        lambda: rollouts.release_set_enabled(feature=other, environment=prod, enabled=False,
                                             actor=personas["oncall"]),
    )
    assert not any(isinstance(r, Exception) for r in results), results
    snapshot = ConfigSnapshot.objects.get(environment=prod)
    assert snapshot.revision == before + 2
    assert '"enabled":true' not in snapshot.body  # both changes are in the served bytes
