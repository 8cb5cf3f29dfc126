"""Every scenario of shared/contracts/rollback.json, through the real service."""
from decimal import Decimal

import pytest

from apps.core.errors import Conflict
from apps.prompts.models import PromptVersion
from apps.prompts.services import feature_create, prompt_version_create
from apps.rollouts.models import Release, ReleaseRevision, VersionMark
from apps.rollouts.services import release_rollback
from tests.conftest import load_contract

CONTRACT = load_contract("rollback.json")
SCENARIOS = CONTRACT["scenarios"]


def _build(feature, environment, history, marked):
    versions = {}
    names = {h["stable"] for h in history} | {h["canary"] for h in history if h["canary"]}
    for step in [s for s in SCENARIOS for s in s["steps"]]:
        names |= set(step.get("expect", {}).get("marks", []))
    for name in sorted(names):
        versions[name] = prompt_version_create(feature=feature, version=name, model="m", template="t {{x}}")
    release = Release.objects.create(feature=feature, environment=environment)
    for number, h in enumerate(history, start=1):
        rev = ReleaseRevision.objects.create(
            release=release, number=number, enabled=h["enabled"], stable_version=versions[h["stable"]],
            canary_version=versions[h["canary"]] if h["canary"] else None,
            canary_basis_points=h["canary_basis_points"], salt=feature.key,
            review_sample_rate=Decimal(str(h.get("review_sample_rate", 0))), action="test.history",
            created_by_label="history",
        )
    release.current_revision = rev
    release.save(update_fields=["current_revision"])
    for name in marked:
        VersionMark.objects.create(release=release, prompt_version=versions[name],
                                   kind=VersionMark.Kind.HALTED, revision=rev)
    return release


def _state(rev: ReleaseRevision, keys) -> dict:
    full = {
        "stable": rev.stable_version.version,
        "canary": rev.canary_version.version if rev.canary_version_id else None,
        "canary_basis_points": rev.canary_basis_points,
        "enabled": rev.enabled,
        "review_sample_rate": float(rev.review_sample_rate),
    }
    return {k: full[k] for k in keys}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_rollback_contract(scenario, envs, personas):
    feature = feature_create(key="contract-feature", name="Contract")
    environment = envs["production"]
    release = _build(feature, environment, scenario["history"], scenario["marked"])
    for step in scenario["steps"]:
        assert step["action"] == "rollback"
        expect = step["expect"]
        before_count = ReleaseRevision.objects.filter(release=release).count()
        kwargs = {"expected_revision": step["expected_revision"]} if "expected_revision" in step else {}
        if "status" in expect:
            assert expect["status"] == 409
            with pytest.raises(Conflict):
                release_rollback(feature=feature, environment=environment, actor=personas["oncall"], **kwargs)
            assert ReleaseRevision.objects.filter(release=release).count() == before_count, "changed nothing"
            continue
        result = release_rollback(feature=feature, environment=environment, actor=personas["oncall"], **kwargs)
        assert result.revision.number == expect["new_revision"]
        assert _state(result.revision, expect["state"].keys()) == expect["state"]
        release.refresh_from_db()
        assert release.current_revision_id == result.revision.pk
        marked = set(VersionMark.objects.filter(release=release).values_list("prompt_version__version", flat=True))
        assert set(expect["marks"]) <= marked
        assert result.marked.version == expect["marks"][-1]
    # history is never deleted
    assert ReleaseRevision.objects.filter(release=release, number=1).exists()
    assert PromptVersion.objects.filter(feature=feature).count() >= 1
