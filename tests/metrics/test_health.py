"""Canary health verdict: the always-valid rate test under simulated streams (false alarms
over 60 looks, power against a 3x regression), the never-healthy cases, the tolerance rules,
and the rollup reader against the database."""
import math
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.metrics import histogram
from apps.metrics.health import (
    STATUS_HEALTHY,
    STATUS_INSUFFICIENT,
    STATUS_UNHEALTHY,
    ArmMinute,
    ArmTotals,
    HealthPolicy,
    canary_health_verdict,
    rate_test,
    rate_test_path,
    verdict_from_minutes,
)
from apps.metrics.models import CallRollup

NOW = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Binomial draw by geometric skips: O(n p), fast for rare events."""
    if p <= 0 or n <= 0:
        return 0
    if p >= 1:
        return n
    count, i, log_q = 0, 0, math.log(1.0 - p)
    while True:
        i += int(math.log(1.0 - rng.random()) / log_q) + 1
        if i > n:
            return count
        count += 1


def shaped_histogram(calls: int, median_ms: float = 800.0) -> list[int]:
    """A deterministic latency histogram: calls spread over a few buckets around the median."""
    h = histogram.empty()
    shares = ((0.5, 1.0), (0.3, 1.3), (0.15, 1.7), (0.05, 2.2))
    left = calls
    for i, (share, factor) in enumerate(shares):
        n = left if i == len(shares) - 1 else int(calls * share)
        histogram.add(h, int(median_ms * factor), n)
        left -= n
    return h


class Stream:
    """A simulated canary + stable stream, minute by minute, with running totals."""

    def __init__(self, rng, *, stable_calls=450, canary_calls=50, stable_error=0.02, canary_error=0.02,
                 stable_blocked=0.01, canary_blocked=0.01, canary_median_ms=800.0,
                 stable_cost="0.002", canary_cost="0.002"):
        self.rng = rng
        self.args = (stable_calls, canary_calls, stable_error, canary_error, stable_blocked, canary_blocked)
        self.canary_median_ms = canary_median_ms
        self.cost = (Decimal(canary_cost), Decimal(stable_cost))
        self.minutes: list[tuple[ArmMinute, ArmMinute]] = []
        self.canary, self.stable = ArmTotals(), ArmTotals()

    def step(self) -> None:
        n_s, n_c, e_s, e_c, b_s, b_c = self.args
        c = ArmMinute(n_c, binomial(self.rng, n_c, e_c), binomial(self.rng, n_c, b_c))
        s = ArmMinute(n_s, binomial(self.rng, n_s, e_s), binomial(self.rng, n_s, b_s))
        self.minutes.append((c, s))
        for total, minute, cost, median in ((self.canary, c, self.cost[0], self.canary_median_ms),
                                            (self.stable, s, self.cost[1], 800.0)):
            total.calls += minute.calls
            total.errors += minute.errors
            total.blocked += minute.blocked
            total.cost_usd += cost * minute.calls
            total.latency_histogram = histogram.merge([total.latency_histogram,
                                                       shaped_histogram(minute.calls, median)])

    def verdict(self, policy=None):
        return verdict_from_minutes(self.minutes, self.canary, self.stable, policy=policy)


def test_verdict__healthy_canary_checked_60_times__false_alarms_stay_below_alpha():
    # Given 150 seeded healthy canaries (same error and blocked rates as stable), each looked
    # at every minute for an hour. When any look says unhealthy, that run is a false alarm.
    started = time.monotonic()
    runs, alarms, healthy_at_end = 150, 0, 0
    for seed in range(runs):
        stream = Stream(random.Random(seed))
        flagged = False
        for _ in range(60):
            stream.step()
            if stream.verdict().status == STATUS_UNHEALTHY:
                flagged = True
                break
        alarms += flagged
        healthy_at_end += (not flagged) and stream.verdict().status == STATUS_HEALTHY
    # Then the false-alarm frequency over unlimited looks stays near or below alpha = 0.05
    # (Ville's bound; the observed rate is far lower since the bound is conservative).
    assert alarms / runs <= 0.05, f"{alarms} false alarms in {runs} runs"
    assert healthy_at_end >= runs - alarms - 1
    # ~1.5 s here; the bound is generous so a loaded CI machine does not fail it.
    assert time.monotonic() - started < 10


def test_verdict__same_error_rate_naive_fixed_test_would_inflate__mixture_does_not():
    # The point of the always-valid test: the mixture e-value path is a supermartingale, so
    # its maximum over 60 minutes rarely reaches 1/alpha even though we look every minute.
    rng = random.Random(7)
    reached = 0
    for _ in range(300):
        series = [(50, binomial(rng, 50, 0.05), 450, binomial(rng, 450, 0.05)) for _ in range(60)]
        reached += max(rate_test_path(series)) >= 20
    assert reached / 300 <= 0.05


def test_verdict__canary_with_3x_error_rate__is_flagged_unhealthy():
    # Given stable at 2 % errors and the canary at 6 %, 50 canary calls a minute.
    detected_at = []
    for seed in range(20):
        stream = Stream(random.Random(1000 + seed), canary_error=0.06)
        for minute in range(1, 61):
            stream.step()
            verdict = stream.verdict()
            if verdict.status == STATUS_UNHEALTHY:
                detected_at.append(minute)
                break
    # Then every run is caught within the hour, typically in a few minutes.
    assert len(detected_at) == 20
    assert sorted(detected_at)[10] <= 20
    checks = verdict.figures["checks"]["error_rate"]
    assert checks["flagged"] and checks["max_e_value"] >= checks["threshold"] == 40
    assert any("error rate" in r for r in verdict.reasons)


def test_verdict__higher_blocked_rate__is_flagged():
    stream = Stream(random.Random(3), canary_blocked=0.05)
    for _ in range(30):
        stream.step()
    verdict = stream.verdict()
    assert verdict.status == STATUS_UNHEALTHY
    assert verdict.figures["checks"]["blocked_rate"]["flagged"]


def test_verdict__canary_better_than_stable__is_healthy():
    stream = Stream(random.Random(4), canary_error=0.005)
    for _ in range(30):
        stream.step()
    assert stream.verdict().status == STATUS_HEALTHY


def test_verdict__no_data__is_insufficient():
    verdict = verdict_from_minutes([], ArmTotals(), ArmTotals())
    assert verdict.status == STATUS_INSUFFICIENT
    assert verdict.reasons == ["no canary calls in the window"]


def test_verdict__few_calls_without_errors__is_insufficient_not_healthy():
    stream = Stream(random.Random(5), canary_calls=5, canary_error=0.0, stable_error=0.0,
                    canary_blocked=0.0, stable_blocked=0.0)
    for _ in range(10):  # 50 canary calls < 100
        stream.step()
    verdict = stream.verdict()
    assert verdict.status == STATUS_INSUFFICIENT
    assert "canary has 50 calls, needs 100" in verdict.reasons[0]
    assert verdict.figures["checks"]["p95_latency_ms"]["skipped"] == "too few calls"


def test_verdict__no_stable_baseline__is_insufficient():
    canary = ArmTotals(calls=500, latency_histogram=shaped_histogram(500))
    minutes = [(ArmMinute(50), ArmMinute(0))] * 10
    verdict = verdict_from_minutes(minutes, canary, ArmTotals())
    assert verdict.status == STATUS_INSUFFICIENT
    assert "stable has 0 calls" in verdict.reasons[0]


@pytest.mark.parametrize("calls", [10, 40, 200])
def test_verdict__only_errors__is_unhealthy(calls):
    minutes = [(ArmMinute(calls, calls, 0), ArmMinute(0, 0, 0))]
    verdict = verdict_from_minutes(minutes, ArmTotals(calls=calls, errors=calls), ArmTotals())
    assert verdict.status == STATUS_UNHEALTHY
    assert f"every canary call failed ({calls} of {calls})" in verdict.reasons


def test_verdict__only_errors_in_both_arms__is_never_healthy():
    minutes = [(ArmMinute(100, 100, 0), ArmMinute(900, 900, 0))] * 3
    verdict = verdict_from_minutes(minutes, ArmTotals(calls=300, errors=300), ArmTotals(calls=2700, errors=2700))
    assert verdict.status == STATUS_UNHEALTHY


def test_verdict__three_calls_all_failed__is_not_healthy():
    minutes = [(ArmMinute(3, 3, 0), ArmMinute(300, 3, 0))]
    verdict = verdict_from_minutes(minutes, ArmTotals(calls=3, errors=3), ArmTotals(calls=300, errors=3))
    assert verdict.status != STATUS_HEALTHY


def test_verdict__latency_regression__flagged_with_figures():
    stream = Stream(random.Random(6), canary_median_ms=1400.0)
    for _ in range(10):
        stream.step()
    verdict = stream.verdict()
    check = verdict.figures["checks"]["p95_latency_ms"]
    assert verdict.status == STATUS_UNHEALTHY
    assert check["flagged"] and check["method"] == "tolerance rule"
    assert check["canary"] > check["limit"] == pytest.approx(check["stable"] * 1.2 + 50, abs=0.1)
    assert any("p95 latency" in r and "x 1.2 + 50 ms" in r for r in verdict.reasons)


def test_verdict__latency_within_tolerance__not_flagged():
    stream = Stream(random.Random(6), canary_median_ms=900.0)
    for _ in range(10):
        stream.step()
    assert stream.verdict().figures["checks"]["p95_latency_ms"]["flagged"] is False


def test_verdict__latency_rule_on_sampled_latencies__rarely_flags_equal_distributions():
    # Tolerance rule, not a test: check it is not trigger-happy at the minimum sample size.
    rng = random.Random(11)
    flagged = 0
    for _ in range(200):
        hists = []
        for n in (100, 1000):
            h = histogram.empty()
            for _ in range(n):
                histogram.add(h, int(rng.lognormvariate(math.log(800), 0.5)))
            hists.append(h)
        verdict = verdict_from_minutes([(ArmMinute(100), ArmMinute(1000))],
                                       ArmTotals(calls=100, latency_histogram=hists[0]),
                                       ArmTotals(calls=1000, latency_histogram=hists[1]))
        flagged += verdict.figures["checks"]["p95_latency_ms"]["flagged"]
    assert flagged / 200 <= 0.05


def test_verdict__cost_regression__flagged_with_figures():
    stream = Stream(random.Random(8), canary_cost="0.003")
    for _ in range(5):
        stream.step()
    verdict = stream.verdict()
    check = verdict.figures["checks"]["cost_per_call_usd"]
    assert verdict.status == STATUS_UNHEALTHY
    assert check == {"method": "tolerance rule", "canary": "0.0030000000", "stable": "0.0020000000",
                     "limit": "0.0025000000", "flagged": True}
    assert "canary cost per call $0.003000 exceeds stable $0.002000 x 1.25" in verdict.reasons


def test_verdict__unpriced_arm__cost_check_skipped():
    stream = Stream(random.Random(8), canary_cost="0", stable_cost="0.002")
    for _ in range(5):
        stream.step()
    verdict = stream.verdict()
    assert verdict.figures["checks"]["cost_per_call_usd"]["skipped"] == "no cost recorded for an arm"
    assert verdict.status == STATUS_HEALTHY


def test_verdict__policy_min_calls_is_configurable():
    stream = Stream(random.Random(9))
    for _ in range(2):  # 100 canary calls
        stream.step()
    assert stream.verdict(HealthPolicy(min_calls=500)).status == STATUS_INSUFFICIENT
    assert stream.verdict(HealthPolicy(min_calls=100)).status == STATUS_HEALTHY


def test_rate_test__uninformative_minutes_leave_the_evidence_at_one():
    assert rate_test([], alpha=0.05).e_value == 1.0
    result = rate_test([(0, 0, 100, 3), (10, 0, 0, 0), (10, 0, 100, 0)], alpha=0.05)
    assert result.e_value == pytest.approx(1.0) and not result.flagged


def test_verdict__figures_are_json_serialisable():
    import json

    stream = Stream(random.Random(10))
    for _ in range(5):
        stream.step()
    json.dumps(stream.verdict().as_dict())


# --- against the database -----------------------------------------------------------------

def make_rollup(*, feature, environment, minute, arm="stable", version="1.0.0", model="gpt-4o-mini", calls=100,
                errors=0, blocked=0, cost="0.20", latency_ms=800, cache_hits=0):
    h = histogram.add(histogram.empty(), latency_ms, calls)
    return CallRollup.objects.create(
        minute=minute, environment=environment, feature=feature, prompt_version=version, arm=arm, model=model,
        calls=calls, errors=errors, blocked=blocked, cache_hits=cache_hits, cost_usd=Decimal(cost),
        latency_sum_ms=latency_ms * calls, latency_histogram=h, input_tokens=calls * 100, output_tokens=calls * 20,
    )


@pytest.fixture
def minute0():
    return NOW.replace(second=0, microsecond=0)


def test_canary_health_verdict__reads_rollups__healthy(feature, envs, minute0):
    prod = envs["production"]
    for i in range(1, 31):
        minute = minute0 - timedelta(minutes=i)
        make_rollup(feature=feature, environment=prod, minute=minute, calls=90, errors=2)
        make_rollup(feature=feature, environment=prod, minute=minute, model="gpt-4o", calls=10, errors=0)
        make_rollup(feature=feature, environment=prod, minute=minute, arm="canary", version="1.1.0", calls=10,
                    errors=0, cost="0.02")
    verdict = canary_health_verdict(feature=feature, environment=prod, now=NOW)
    assert verdict.status == STATUS_HEALTHY, verdict.reasons
    assert verdict.figures["canary"]["calls"] == 300 and verdict.figures["stable"]["calls"] == 3000
    assert verdict.figures["stable"]["errors"] == 60
    assert verdict.window_end == minute0 and verdict.window_start == minute0 - timedelta(minutes=60)


def test_canary_health_verdict__current_minute_and_other_envs_ignored(feature, envs, minute0):
    prod, staging = envs["production"], envs["staging"]
    make_rollup(feature=feature, environment=prod, minute=minute0, arm="canary", calls=500, errors=500)
    make_rollup(feature=feature, environment=staging, minute=minute0 - timedelta(minutes=1), arm="canary",
                calls=500, errors=500)
    verdict = canary_health_verdict(feature=feature, environment=prod, now=NOW)
    assert verdict.status == STATUS_INSUFFICIENT and verdict.figures["canary"]["calls"] == 0


def test_canary_health_verdict__canary_errors_flagged(feature, envs, minute0):
    prod = envs["production"]
    for i in range(1, 21):
        minute = minute0 - timedelta(minutes=i)
        make_rollup(feature=feature, environment=prod, minute=minute, calls=500, errors=5)
        make_rollup(feature=feature, environment=prod, minute=minute, arm="canary", version="1.1.0", calls=50,
                    errors=3, latency_ms=2500)
    verdict = canary_health_verdict(feature=feature, environment=prod, now=NOW)
    assert verdict.status == STATUS_UNHEALTHY
    assert verdict.figures["checks"]["error_rate"]["flagged"]
    assert verdict.figures["checks"]["p95_latency_ms"]["flagged"]


def test_canary_health_verdict__since_and_canary_version_narrow_the_data(feature, envs, minute0):
    prod = envs["production"]
    for i in range(1, 41):
        minute = minute0 - timedelta(minutes=i)
        make_rollup(feature=feature, environment=prod, minute=minute, calls=500, errors=5)
        # an earlier, aborted canary 1.1.0 that failed badly; the current canary is 1.2.0
        make_rollup(feature=feature, environment=prod, minute=minute, arm="canary", version="1.1.0", calls=50,
                    errors=40, cost="0.02")
        make_rollup(feature=feature, environment=prod, minute=minute, arm="canary", version="1.2.0", calls=50,
                    errors=0, cost="0.02")
    assert canary_health_verdict(feature=feature, environment=prod, now=NOW).status == STATUS_UNHEALTHY
    verdict = canary_health_verdict(feature=feature, environment=prod, now=NOW, canary_version="1.2.0",
                                    since=minute0 - timedelta(minutes=10))
    assert verdict.status == STATUS_HEALTHY, verdict.reasons
    assert verdict.figures["canary"]["calls"] == 500
    assert verdict.window_start == minute0 - timedelta(minutes=10)


def test_canary_health_verdict__query_count(feature, envs, minute0, django_assert_num_queries):
    prod = envs["production"]
    for i in range(1, 11):
        make_rollup(feature=feature, environment=prod, minute=minute0 - timedelta(minutes=i), calls=50)
    with django_assert_num_queries(2):
        canary_health_verdict(feature=feature, environment=prod, now=NOW)


@pytest.mark.parametrize("n_c, n_s, e", [(5, 45, 3), (50, 450, 12), (10, 10, 7), (1, 99, 1), (30, 70, 60),
                                         (100, 900, 1000)])
def test_rate_test__each_minute_factor_has_expectation_at_most_one_under_h0(n_c, n_s, e):
    # The validity argument of docs/canary-health.md, checked exactly: under H0 the canary's
    # share of a minute's events is hypergeometric, and the binomial likelihood ratio the test
    # multiplies has expectation <= 1 under it (Hoeffding), for every theta of the prior.
    from math import comb

    from apps.metrics.health import THETA_GRID, _minute_logs

    e = min(e, n_c + n_s)
    total = comb(n_c + n_s, e)
    support = range(max(0, e - n_s), min(e, n_c) + 1)
    for i, _theta in enumerate(THETA_GRID):
        expectation = sum(comb(n_c, x) * comb(n_s, e - x) / total * math.exp(_minute_logs(n_c, x, n_s, e - x,
                                                                                          THETA_GRID)[i])
                          for x in support)
        assert expectation <= 1 + 1e-9
