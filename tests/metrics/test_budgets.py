"""Budgets: periods in the feature's time zone, check-and-reserve, settlement by ingest,
expiry, alerts once per period, and the budget state served in the config snapshot."""
import itertools
import json
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine

from apps.core.errors import PermissionDenied, ValidationFailed
from apps.core.models import AuditEvent
from apps.metrics import budgets
from apps.metrics.models import Alert, BudgetReservation, BudgetUsage, CallEvent
from apps.rollouts.models import ConfigSnapshot

pytestmark = pytest.mark.django_db

TOKYO = ZoneInfo("Asia/Tokyo")
_ids = itertools.count()


def jst(*args) -> datetime:
    return datetime(*args, tzinfo=TOKYO)


def event(feature, env, *, cost="0", at, user_key="", request_id="", input_tokens=0, output_tokens=0,
          outcome="success"):
    return CallEvent.objects.create(
        event_id=f"e-{next(_ids)}", environment=env, feature=feature, model="gpt-4o-mini", latency_ms=100,
        cost_usd=Decimal(cost), input_tokens=input_tokens, output_tokens=output_tokens, user_key=user_key,
        request_id=request_id, occurred_at=at, outcome=outcome,
    )


def settle(*events):
    budgets.budget_events_settle(events=list(events))


def usage(feature, scope, subject=""):
    return BudgetUsage.objects.get(feature=feature, scope=scope, subject=subject)


def test_budget_check__tokyo_daily_cap__denied_before_local_midnight_allowed_after(feature, envs, personas):
    """Worked case: Asia/Tokyo, $1.00 daily cap spent at 23:30 JST -> a request at 23:45 JST
    is denied, one at 00:05 JST the next day is allowed."""
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="1.00", time_zone="Asia/Tokyo")
    with time_machine.travel(jst(2026, 12, 4, 23, 30), tick=False):
        settle(event(feature, envs["production"], cost="1.00", at=jst(2026, 12, 4, 23, 30), user_key="u1"))

    with time_machine.travel(jst(2026, 12, 4, 23, 45), tick=False):
        denied = budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.01"))
        status = budgets.budget_status(feature=feature, user_key="u1")
    assert denied.allowed is False and denied.reason == "user_daily_cap"
    assert denied.reservation_id is None
    assert denied.resets_at.isoformat() == "2026-12-05T00:00:00+09:00"
    day = status["scopes"]["user_day"]
    assert day["spent"] == Decimal("1.00") and day["remaining"] == 0 and day["percent"] == Decimal("100.0")
    assert day["period_start"].isoformat() == "2026-12-04T00:00:00+09:00"
    assert day["resets_at"].isoformat() == "2026-12-05T00:00:00+09:00"

    with time_machine.travel(jst(2026, 12, 5, 0, 5), tick=False):
        allowed = budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.01"))
    assert allowed.allowed is True and allowed.reservation_id is not None
    assert allowed.remaining["user_day"]["remaining"] == Decimal("0.99")
    assert allowed.resets_at.isoformat() == "2026-12-06T00:00:00+09:00"
    # Stored as the aware start of the local day, in UTC: 2026-12-04T15:00Z.
    starts = sorted(BudgetUsage.objects.values_list("period_start", flat=True))
    assert [s.isoformat() for s in starts] == ["2026-12-03T15:00:00+00:00", "2026-12-04T15:00:00+00:00"]


def test_period_bounds__month_in_zone():
    start, end = budgets.period_bounds(scope="feature_month", zone=TOKYO, at=jst(2026, 12, 31, 23, 59))
    assert start.isoformat() == "2026-11-30T15:00:00+00:00"
    assert end.isoformat() == "2027-01-01T00:00:00+09:00"
    start, end = budgets.period_bounds(scope="feature_month", zone=ZoneInfo("UTC"),
                                       at=datetime(2027, 2, 10, tzinfo=ZoneInfo("UTC")))
    assert (start.day, start.month, end.month) == (1, 2, 3)


def test_budget_check__reserves_and_settle_releases_by_request_id(feature, envs, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="0.01", feature_monthly_cap="5")
    first = budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.005"))
    second = budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.005"))
    third = budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.005"))
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert usage(feature, "user_day", "u1").reserved == Decimal("0.01")
    assert usage(feature, "feature_month").reserved == Decimal("0.01")

    # The call of the *second* reservation reports first, naming it: exactly that one settles.
    settle(event(feature, envs["production"], cost="0.004", at=budgets.timezone.now(), user_key="u1",
                 request_id=str(second.reservation_id)))
    assert BudgetReservation.objects.get(pk=second.reservation_id).settled_at is not None
    assert BudgetReservation.objects.get(pk=first.reservation_id).settled_at is None
    day = usage(feature, "user_day", "u1")
    assert (day.spent, day.reserved) == (Decimal("0.004"), Decimal("0.005"))
    # Without a request id, the oldest unsettled reservation of that feature and user settles.
    settle(event(feature, envs["production"], cost="0.001", at=budgets.timezone.now(), user_key="u1"))
    assert BudgetReservation.objects.get(pk=first.reservation_id).settled_at is not None
    day = usage(feature, "user_day", "u1")
    assert (day.spent, day.reserved) == (Decimal("0.005"), Decimal("0"))
    assert budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.005")).allowed


def test_budget_events_settle__batch_of_many_users__few_queries(feature, envs, personas, django_assert_max_num_queries):
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="1", feature_monthly_cap="100")
    now = budgets.timezone.now()
    batch = [event(feature, envs["production"], cost="0.01", at=now, user_key=f"user-{i}") for i in range(200)]
    with django_assert_max_num_queries(12):
        settle(*batch)
    assert usage(feature, "feature_month").spent == Decimal("2.00")
    assert BudgetUsage.objects.filter(scope="user_day").count() == 200


def test_budget_reservations_expire__releases_held_amounts(feature, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, feature_monthly_cap="1")
    decision = budgets.budget_check(feature=feature, estimated_cost_usd=Decimal("0.6"))
    assert not budgets.budget_check(feature=feature, estimated_cost_usd=Decimal("0.6")).allowed
    assert budgets.budget_reservations_expire()["released"] == 0
    result = budgets.budget_reservations_expire(now=budgets.timezone.now() + timedelta(minutes=16))
    assert result["released"] == 1
    assert usage(feature, "feature_month").reserved == 0
    assert BudgetReservation.objects.get(pk=decision.reservation_id).settled_at is not None
    assert budgets.budget_check(feature=feature, estimated_cost_usd=Decimal("0.6")).allowed


def test_budget_check__over_per_request_token_cap__denied_with_reason(feature, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, max_tokens_per_request=4000)
    assert budgets.budget_check(feature=feature, estimated_tokens=4000).allowed
    denied = budgets.budget_check(feature=feature, estimated_tokens=100, max_tokens=4001)
    assert (denied.allowed, denied.reason) == (False, "max_tokens_per_request")


def test_budget_check__no_budget__allowed(feature):
    decision = budgets.budget_check(feature=feature, user_key="u", estimated_cost_usd=Decimal("100"))
    assert (decision.allowed, decision.reason, decision.reservation_id) == (True, "no_budget", None)


def test_budget_tokens_unit__counts_input_plus_output_tokens(feature, envs, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, feature_monthly_cap="1000",
                       feature_monthly_unit="tokens", user_daily_cap="1", user_daily_unit="usd")
    settle(event(feature, envs["production"], cost="0.2", at=budgets.timezone.now(), user_key="u",
                 input_tokens=600, output_tokens=300))
    assert usage(feature, "feature_month").spent == 900
    assert usage(feature, "user_day", "u").spent == Decimal("0.2")
    assert not budgets.budget_check(feature=feature, user_key="u", estimated_tokens=101,
                                    estimated_cost_usd=Decimal("0.1")).allowed
    mixed = budgets.budget_check(feature=feature, user_key="u", estimated_tokens=100, estimated_cost_usd=Decimal("0.1"))
    assert mixed.allowed
    assert BudgetReservation.objects.get(pk=mixed.reservation_id).unit == "both"


def test_budget_alerts__fire_once_per_period_and_threshold(feature, envs, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, feature_monthly_cap="1.00")
    prod = envs["production"]
    with time_machine.travel(datetime(2026, 12, 10, 12, tzinfo=ZoneInfo("UTC")), tick=False):
        now = budgets.timezone.now()
        settle(event(feature, prod, cost="0.50", at=now))
        settle(event(feature, prod, cost="0.10", at=now))
        assert set(Alert.objects.values_list("dedupe_key", flat=True)) == {
            "budget:ticket-summarizer:feature_month::2026-12-01:50"}
        settle(event(feature, prod, cost="0.45", at=now))  # 105 %: 80 and 100 cross together
        budgets.budget_check(feature=feature, estimated_cost_usd=Decimal("0.01"))  # checks too, no duplicate
        settle(event(feature, prod, cost="0.45", at=now))
    keys = sorted(Alert.objects.values_list("dedupe_key", flat=True))
    # The jump past 80 and 100 sends one "reached" alert, which supersedes the 50 % one.
    assert keys == [f"budget:ticket-summarizer:feature_month::2026-12-01:{t}" for t in (100, 50)]
    reached = Alert.objects.get(dedupe_key__endswith=":100")
    assert reached.kind == "budget" and "reached" in reached.title and reached.resolved_at is None
    assert reached.figures["resets_at"] == "2027-01-01T00:00:00+00:00"
    assert Alert.objects.get(dedupe_key__endswith=":50").resolved_at is not None

    # Next month: the old alert resolves, the same thresholds may fire again.
    with time_machine.travel(datetime(2027, 1, 1, 0, 1, tzinfo=ZoneInfo("UTC")), tick=False):
        assert budgets.budget_reservations_expire()["resolved"] == 1
        settle(event(feature, prod, cost="0.55", at=budgets.timezone.now()))
        settle(event(feature, prod, cost="0.30", at=budgets.timezone.now()))  # 85 %: 80 fires on its own
    open_keys = set(Alert.objects.filter(resolved_at=None).values_list("dedupe_key", flat=True))
    assert open_keys == {"budget:ticket-summarizer:feature_month::2027-01-01:80"}
    assert Alert.objects.count() == 4


def test_budget_alerts__late_event_of_a_past_period__no_alert(feature, envs, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, feature_monthly_cap="1.00")
    last_month = budgets.timezone.now() - timedelta(days=40)
    settle(event(feature, envs["production"], cost="5", at=last_month))
    assert Alert.objects.count() == 0


def _served(env) -> dict:
    snapshot = ConfigSnapshot.objects.get(environment=env)
    return snapshot.revision, json.loads(snapshot.body)["features"]["ticket-summarizer"]["budget"]


def test_config_snapshot__serves_token_cap_and_exhaustion(release, envs, personas):
    prod = envs["production"]
    feature = release.feature
    rev0, served = _served(prod)
    assert served == {"max_tokens_per_request": None, "exhausted": False}

    budgets.budget_set(actor=personas["pm"], feature=feature, max_tokens_per_request=2048, feature_monthly_cap="1")
    rev1, served = _served(prod)
    assert rev1 == rev0 + 1 and served == {"max_tokens_per_request": 2048, "exhausted": False}

    settle(event(feature, prod, cost="0.4", at=budgets.timezone.now()))
    assert _served(prod)[0] == rev1  # nothing served changed: no rebuild
    settle(event(feature, prod, cost="0.6", at=budgets.timezone.now()))
    rev2, served = _served(prod)
    assert rev2 == rev1 + 1 and served["exhausted"] is True
    assert AuditEvent.objects.filter(action="budget.exhausted", object_key=feature.key, actor=None).count() == 1
    settle(event(feature, prod, cost="0.1", at=budgets.timezone.now()))
    assert _served(prod)[0] == rev2  # already exhausted: no second rebuild

    # Raising the ceiling lifts exhaustion at once.
    budgets.budget_set(actor=personas["pm"], feature=feature, max_tokens_per_request=2048, feature_monthly_cap="2")
    assert _served(prod)[1]["exhausted"] is False
    budgets.budget_set(actor=personas["pm"], feature=feature, max_tokens_per_request=2048, feature_monthly_cap="1")
    assert _served(prod)[1]["exhausted"] is True
    # When the month is over, the periodic task ends it.
    budgets.budget_reservations_expire(now=budgets.timezone.now() + timedelta(days=32))
    assert _served(prod)[1]["exhausted"] is False
    assert AuditEvent.objects.filter(action="budget.renewed", object_key=feature.key).count() == 1


def test_budget_set__audited_and_permissioned(feature, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="2.5",
                       webhook_url="https://hooks.example.com/services/SECRET")
    audit = AuditEvent.objects.filter(action="budget.set").get()
    assert audit.after["user_daily_cap"] == "2.5"
    assert "SECRET" not in json.dumps(audit.after)
    budgets.budget_set(actor=personas["admin"], feature=feature, user_daily_cap="3")
    assert AuditEvent.objects.filter(action="budget.set").count() == 2
    with pytest.raises(PermissionDenied):
        budgets.budget_set(actor=personas["reviewer"], feature=feature, user_daily_cap="1")
    with pytest.raises(PermissionDenied):
        budgets.budget_set(actor=personas["engineer"], feature=feature, user_daily_cap="1")


@pytest.mark.parametrize("kwargs, field", [
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ({"user_daily_cap": "-1"}, "user_daily_cap"),
    ({"feature_monthly_cap": "0"}, "feature_monthly_cap"),
    ({"feature_monthly_cap": "abc"}, "feature_monthly_cap"),
    ({"max_tokens_per_request": 0}, "max_tokens_per_request"),
    ({"user_daily_unit": "eur"}, "user_daily_unit"),
    ({"webhook_url": "ftp://x"}, "webhook_url"),
])
def test_budget_set__bad_input__validation_failed(feature, personas, kwargs, field):
    with pytest.raises(ValidationFailed) as info:
        budgets.budget_set(actor=personas["pm"], feature=feature, **kwargs)
    assert field in info.value.details


def test_snapshot_body__budget_state_is_one_query_for_all_features(release, envs, personas):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.prompts.services import feature_create, prompt_version_create
    from apps.rollouts import services as rollouts
    from apps.rollouts.snapshot import snapshot_body

    prod = envs["production"]

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            snapshot_body(environment=prod, revision=1)
        return len(ctx.captured_queries)

    budgets.budget_set(actor=personas["pm"], feature=release.feature, max_tokens_per_request=100)
    one = queries()
    for i in range(3):
        other = feature_create(key=f"other-{i}", name=f"Other {i}", actor=personas["pm"], owner=personas["pm"])
        prompt_version_create(feature=other, version="1.0.0", model="m", template="Hi", actor=personas["engineer"])
        rollouts.release_create(feature=other, environment=prod, stable_version="1.0.0", actor=personas["engineer"])
        budgets.budget_set(actor=personas["pm"], feature=other, max_tokens_per_request=10 + i)
    assert queries() == one
    served = json.loads(snapshot_body(environment=prod, revision=1))["features"]
    assert served["other-2"]["budget"] == {"max_tokens_per_request": 12, "exhausted": False}


def test_budget_alerts_evaluate__usage_written_directly__opens_the_crossed_alert_once(feature, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, feature_monthly_cap="25")
    now = budgets.timezone.now()
    start, _ = budgets.period_bounds(scope=budgets.FEATURE_MONTH, zone=budgets.zone_get("UTC"), at=now)
    BudgetUsage.objects.create(feature=feature, scope=budgets.FEATURE_MONTH, subject="", period_start=start,
                               unit="usd", spent=Decimal("15.35150475"))
    assert budgets.budget_alerts_evaluate(feature=feature, now=now) == 1
    assert budgets.budget_alerts_evaluate(feature=feature, now=now) == 0
    alert = Alert.objects.get()
    assert alert.title == "ticket-summarizer: monthly budget at 50 % ($15.35 of $25.00)"



@pytest.mark.parametrize("stranger", [
    {"outcome": "budget_blocked"},            # the SDK's report of a refused call: it had no reservation
    {"request_id": "999999"},                 # names a reservation that is not there (settled, another's)
    {"request_id": "app-req-7f3a"},           # the app's own request id
])
def test_settle__an_event_never_releases_a_reservation_it_does_not_own(feature, envs, personas, stranger):
    """Field report: an unrelated event released an in-flight $0.60 hold, so a second $0.60
    check was admitted against a $1.00 daily cap."""
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="1.00")
    first = budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.6"))
    assert first.allowed
    settle(event(feature, envs["production"], user_key="u1", at=budgets.timezone.now(), **stranger))
    assert usage(feature, budgets.USER_DAY, "u1").reserved == Decimal("0.6")
    assert not budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.6")).allowed
    # Its own event settles it; a reservation id of the same feature but another user does not.
    settle(event(feature, envs["production"], user_key="u2", request_id=str(first.reservation_id), cost="0.6",
                 at=budgets.timezone.now()))
    assert usage(feature, budgets.USER_DAY, "u1").reserved == Decimal("0.6")
    settle(event(feature, envs["production"], user_key="u1", request_id=str(first.reservation_id), cost="0.6",
                 at=budgets.timezone.now()))
    assert usage(feature, budgets.USER_DAY, "u1").reserved == 0
    assert usage(feature, budgets.USER_DAY, "u1").spent == Decimal("0.6")


def test_settle__event_without_request_id__releases_the_oldest_hold_of_its_user(feature, envs, personas):
    budgets.budget_set(actor=personas["pm"], feature=feature, user_daily_cap="1.00")
    budgets.budget_check(feature=feature, user_key="u1", estimated_cost_usd=Decimal("0.3"))
    settle(event(feature, envs["production"], user_key="u1", cost="0.25", at=budgets.timezone.now()))
    assert (usage(feature, budgets.USER_DAY, "u1").reserved, usage(feature, budgets.USER_DAY, "u1").spent) == (
        0, Decimal("0.25"))
