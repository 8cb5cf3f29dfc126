"""Demo telemetry for `manage.py seed_demo`: a week of believable traffic for the seeded demo
features in both environments, so the dashboards are not empty after `make run`.

It writes CallRollup rows directly (one per 10 minutes per environment x feature x version x
arm) and adds them into their CallRollupHour rows through apps.metrics.rollups (the code
rollup_pending uses, so each hour row is the sum of its minute rows): the dashboards read
those, plus a few hundred raw CallEvents for the last hour as samples. The story it tells
matches the seeded release history:

- ticket-summarizer: v1.1.0 stable in production; v1.2.0 canary at 5 % then 25 %, then
  promoted two days ago (a little slower, more output tokens); a provider error spike
  three days ago.
- refund-drafter: v1.0.0 stable; v1.1.0 canary at 1 % and, for the last day and a half,
  5 % in production (slower, gpt-4o); guardrail blocks now and then.
- support-router: v2.0.0, then v2.1.0 from four days ago; a short timeout spike yesterday.

Traffic follows a daily cycle (peak mid-afternoon UTC, quieter weekends); latencies are
lognormal per model; cost comes from the model price table. Deterministic (seeded random)
and idempotent: nothing is written when the demo features already have telemetry."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from apps.core.models import Environment
from apps.metrics import histogram, impact
from apps.metrics.budgets import (
    FEATURE_MONTH,
    USER_DAY,
    budget_alerts_evaluate,
    budget_set,
    period_bounds,
    zone_get,
)
from apps.metrics.models import Budget, BudgetUsage, CallEvent, CallRollup, CallRollupHour, Outcome
from apps.metrics.pricing import PriceBook
from apps.metrics.rollups import rollup_hours_add
from apps.prompts.models import Feature, PromptVersion

SLOT = timedelta(minutes=10)
SAMPLES_PER_SLOT = 40  # latencies drawn per rollup row; each stands for calls / samples calls
RAW_EVENTS = 300
DEMO_BUDGETS = {  # feature -> (monthly ceiling, per-user daily cap), USD
    "ticket-summarizer": ("25.00", "0.01"),
    "refund-drafter": ("1500.00", "0.10"),
}
FALLBACK_RATES = {  # USD per million tokens (input, cached input, output) when a model has no price row
    "gpt-4o": (Decimal("2.50"), Decimal("1.25"), Decimal("10.00")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
}


@dataclass(frozen=True)
class VersionProfile:
    """How calls of one prompt version behave."""

    median_ms: float
    sigma: float
    input_tokens: int
    output_tokens: int
    error_rate: float = 0.006
    blocked_rate: float = 0.0
    cache_hit_rate: float = 0.25


@dataclass(frozen=True)
class Phase:
    """From `since_h` hours ago (until the next phase): who serves, and the canary's share."""

    since_h: float
    stable: str
    canary: str | None = None
    canary_share: float = 0.0


@dataclass(frozen=True)
class Spike:
    """Extra failures between `from_h` and `to_h` hours ago."""

    from_h: float
    to_h: float
    error_rate: float


@dataclass(frozen=True)
class DemoFeature:
    key: str
    calls_per_hour: dict[str, float]  # environment key -> mean calls per hour at the daily average
    versions: dict[str, VersionProfile]
    phases: dict[str, list[Phase]]  # environment key -> phases, oldest first
    spikes: tuple[Spike, ...] = ()


DEMO: tuple[DemoFeature, ...] = (
    DemoFeature(
        key="ticket-summarizer",
        calls_per_hour={"production": 900, "staging": 30},
        versions={
            "1.0.0": VersionProfile(650, 0.45, 850, 110),
            "1.1.0": VersionProfile(720, 0.45, 900, 140, cache_hit_rate=0.28),
            "1.2.0": VersionProfile(810, 0.42, 930, 190, error_rate=0.004, cache_hit_rate=0.31),
        },
        phases={
            "production": [Phase(999, "1.1.0"), Phase(132, "1.1.0", "1.2.0", 0.05),
                           Phase(96, "1.1.0", "1.2.0", 0.25), Phase(44, "1.2.0")],
            "staging": [Phase(999, "1.2.0")],
        },
        spikes=(Spike(75, 74.2, 0.16),),
    ),
    DemoFeature(
        key="refund-drafter",
        calls_per_hour={"production": 260, "staging": 12},
        versions={
            "1.0.0": VersionProfile(1750, 0.5, 1400, 260, error_rate=0.008, blocked_rate=0.004, cache_hit_rate=0.12),
            "1.1.0": VersionProfile(2050, 0.5, 1650, 320, error_rate=0.009, blocked_rate=0.003, cache_hit_rate=0.1),
        },
        phases={
            "production": [Phase(999, "1.0.0"), Phase(70, "1.0.0", "1.1.0", 0.01),
                           Phase(36, "1.0.0", "1.1.0", 0.05)],
            "staging": [Phase(999, "1.1.0")],
        },
    ),
    DemoFeature(
        key="support-router",
        calls_per_hour={"production": 1800, "staging": 45},
        versions={
            "2.0.0": VersionProfile(380, 0.35, 260, 3, error_rate=0.003, cache_hit_rate=0.42),
            "2.1.0": VersionProfile(400, 0.35, 275, 3, error_rate=0.003, cache_hit_rate=0.44),
        },
        phases={
            "production": [Phase(999, "2.0.0"), Phase(96, "2.1.0")],
            "staging": [Phase(999, "2.1.0")],
        },
        spikes=(Spike(27, 26.5, 0.22),),
    ),
)


def _daily_factor(t: datetime) -> float:
    """Traffic relative to the daily mean: low at 03:00 UTC, high at 15:00; weekends at 60 %."""
    hour = t.hour + t.minute / 60
    factor = 1 + 0.7 * math.sin((hour - 9) / 24 * 2 * math.pi)
    return factor * (0.6 if t.weekday() >= 5 else 1.0)


def _count(rng: random.Random, mean: float) -> int:
    """A Poisson-like count (normal approximation, exact enough for a demo)."""
    if mean <= 0:
        return 0
    if mean < 20:
        # Knuth's method for small means
        limit, k, p = math.exp(-mean), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0:
        return 0
    if n < 30:
        return sum(1 for _ in range(n) if rng.random() < p)
    mean = n * p
    return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))


def _phase_at(phases: list[Phase], hours_ago: float) -> Phase:
    current = phases[0]
    for phase in phases:
        if hours_ago <= phase.since_h:
            current = phase
    return current


class _Rates:
    def __init__(self) -> None:
        self.book = PriceBook.load()

    def get(self, model: str, at: datetime) -> tuple[Decimal, Decimal, Decimal]:
        rates = self.book.rates(model, at.date())
        if rates is None:
            return FALLBACK_RATES.get(model, FALLBACK_RATES["gpt-4o-mini"])
        return rates.input_per_million, rates.cached_input_per_million, rates.output_per_million


def _cost(rates: tuple[Decimal, Decimal, Decimal], input_tokens: int, cached: int, output: int) -> Decimal:
    inp, cached_rate, out = rates
    return ((input_tokens - cached) * inp + cached * cached_rate + output * out) / Decimal(1_000_000)


def demo_telemetry_seed(*, days: int = 7, now: datetime | None = None) -> dict[str, int]:
    """Write `days` of demo telemetry ending now; returns {"rollups": n, "events": m}.
    Does nothing (returns zeros) when the demo features are missing or already have
    telemetry, so `seed_demo` can be run again safely."""
    now = (now or timezone.now()).astimezone(UTC)
    features = {f.key: f for f in Feature.objects.filter(key__in=[d.key for d in DEMO])}
    environments = {e.key: e for e in Environment.objects.filter(key__in=["production", "staging"])}
    if not features or not environments:
        return {"rollups": 0, "events": 0}
    if CallRollup.objects.filter(feature__in=features.values()).exists():
        return {"rollups": 0, "events": 0}
    models = {(pv.feature_id, pv.version): pv.model
              for pv in PromptVersion.objects.filter(feature__in=features.values())}
    rng = random.Random(20260101)
    rates = _Rates()
    end = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 10)
    start = end - timedelta(days=days)
    all_per_hour = sum(sum(d.calls_per_hour.values()) for d in DEMO)
    rollups: list[CallRollup] = []
    events: list[CallEvent] = []

    for demo in DEMO:
        feature = features.get(demo.key)
        if feature is None:
            continue
        for env_key, per_hour in demo.calls_per_hour.items():
            environment = environments.get(env_key)
            if environment is None:
                continue
            t = start
            while t < end:
                hours_ago = (end - t).total_seconds() / 3600
                phase = _phase_at(demo.phases[env_key], hours_ago)
                spike = max((s.error_rate for s in demo.spikes if s.to_h <= hours_ago <= s.from_h
                             and env_key == "production"), default=0.0)
                total = _count(rng, per_hour / 6 * _daily_factor(t))
                canary = _binomial(rng, total, phase.canary_share) if phase.canary else 0
                for version, arm, calls in ((phase.stable, "stable", total - canary),
                                            (phase.canary, "canary", canary)):
                    if not version or calls <= 0:
                        continue
                    model = models.get((feature.id, version), "gpt-4o-mini")
                    rollups.append(_rollup(rng, rates, feature=feature, environment=environment, minute=t,
                                           version=version, arm=arm, model=model, calls=calls,
                                           profile=demo.versions[version], spike=spike))
                t += SLOT
            # Raw samples for the last hour (already counted in the rollups above: rolled_up=True).
            events.extend(_events(rng, rates, demo, feature=feature, environment=environment, models=models,
                                  end=end, count=round(RAW_EVENTS * per_hour / all_per_hour)))

    with transaction.atomic():
        # Hour rows of these features without their minute rows (someone deleted the minute
        # rows by hand) would otherwise count the demo twice.
        CallRollupHour.objects.filter(feature__in=features.values()).delete()
        CallRollup.objects.bulk_create(rollups, batch_size=500)
        rollup_hours_add(minute_rows=rollups)
        CallEvent.objects.bulk_create(events, batch_size=500)
    _budgets(features, rollups=rollups, events=events, now=now)
    return {"rollups": len(rollups), "events": len(events)}


def _budgets(features: dict[str, Feature], *, rollups: list[CallRollup], events: list[CallEvent],
             now: datetime) -> None:
    """Give the demo features budgets (through the audited service) when they have none, with
    this month's and today's usage counters matching the telemetry just written, so the
    dashboards' gauges show something true."""
    for key, (monthly, user_daily) in DEMO_BUDGETS.items():
        feature = features.get(key)
        if feature is None or Budget.objects.filter(feature=feature).exists():
            continue
        budget_set(actor=None, feature=feature, feature_monthly_cap=monthly, user_daily_cap=user_daily,
                   max_tokens_per_request=8000)
        zone = zone_get("UTC")
        month_start, _ = period_bounds(scope=FEATURE_MONTH, zone=zone, at=now)
        day_start, _ = period_bounds(scope=USER_DAY, zone=zone, at=now)
        spent = sum((r.cost_usd for r in rollups if r.feature_id == feature.id and r.minute >= month_start),
                    Decimal(0))
        usages = [BudgetUsage(feature=feature, scope=FEATURE_MONTH, subject="", period_start=month_start,
                              unit="usd", spent=spent)]
        per_user: dict[str, Decimal] = {}
        for e in events:
            if e.feature_id == feature.id and e.occurred_at >= day_start:
                per_user[e.user_key] = per_user.get(e.user_key, Decimal(0)) + e.cost_usd
        usages += [BudgetUsage(feature=feature, scope=USER_DAY, subject=user, period_start=day_start, unit="usd",
                               spent=amount) for user, amount in per_user.items()]
        BudgetUsage.objects.bulk_create(usages, ignore_conflicts=True)
        budget_alerts_evaluate(feature=feature, now=now)  # e.g. "monthly budget at 50 %"


def _rollup(rng: random.Random, rates: _Rates, *, feature, environment, minute, version, arm, model, calls,
            profile: VersionProfile, spike: float) -> CallRollup:
    errors = _binomial(rng, calls, min(1.0, profile.error_rate + spike))
    blocked = _binomial(rng, calls - errors, profile.blocked_rate)
    cache_hits = _binomial(rng, calls - errors, profile.cache_hit_rate)
    # Token totals: per-call sizes vary lognormally around the profile; cache hits have most
    # of their input (the shared prompt prefix) cached.
    input_tokens = round(calls * profile.input_tokens * rng.lognormvariate(0, 0.08))
    output_tokens = round((calls - errors) * profile.output_tokens * rng.lognormvariate(0, 0.1))
    cached_tokens = min(input_tokens, round(cache_hits * profile.input_tokens * 0.8))
    samples = min(calls, SAMPLES_PER_SLOT)
    h, latency_sum = histogram.empty(), 0
    for i in range(samples):
        weight = calls // samples + (1 if i < calls % samples else 0)
        latency = rng.lognormvariate(math.log(profile.median_ms), profile.sigma)
        if spike and rng.random() < 0.5:
            latency *= 3  # failing calls time out slowly
        latency = max(1, round(latency))
        histogram.add(h, latency, weight)
        latency_sum += latency * weight
    return CallRollup(
        minute=minute, environment=environment, feature=feature, prompt_version=version, arm=arm, model=model,
        calls=calls, errors=errors, blocked=blocked, budget_blocked=0, cache_hits=cache_hits,
        input_tokens=input_tokens, cached_tokens=cached_tokens, output_tokens=output_tokens,
        cost_usd=_cost(rates.get(model, minute), input_tokens, cached_tokens, output_tokens).quantize(
            Decimal("1e-10")),
        latency_sum_ms=latency_sum, latency_histogram=h,
    )


def _events(rng: random.Random, rates: _Rates, demo: DemoFeature, *, feature, environment, models, end,
            count: int) -> list[CallEvent]:
    phase = _phase_at(demo.phases[environment.key], 0.5)
    out = []
    for n in range(count):
        arm, version = ("canary", phase.canary) if phase.canary and rng.random() < phase.canary_share \
            else ("stable", phase.stable)
        profile = demo.versions[version]
        model = models.get((feature.id, version), "gpt-4o-mini")
        occurred = end - timedelta(seconds=rng.uniform(0, 3600))
        roll = rng.random()
        outcome = (Outcome.ERROR if roll < profile.error_rate
                   else Outcome.BLOCKED if roll < profile.error_rate + profile.blocked_rate else Outcome.SUCCESS)
        cache_hit = outcome == Outcome.SUCCESS and rng.random() < profile.cache_hit_rate
        input_tokens = max(1, round(rng.lognormvariate(math.log(profile.input_tokens), 0.3)))
        cached = round(input_tokens * 0.8) if cache_hit else 0
        output = 0 if outcome == Outcome.ERROR else max(1, round(rng.lognormvariate(
            math.log(profile.output_tokens), 0.35)))
        out.append(CallEvent(
            event_id=f"demo-{environment.key}-{feature.key}-{n:05d}", environment=environment, feature=feature,
            prompt_version=version, arm=arm, model=model,
            latency_ms=max(1, round(rng.lognormvariate(math.log(profile.median_ms), profile.sigma))),
            input_tokens=input_tokens, cached_tokens=cached, output_tokens=output,
            cost_usd=_cost(rates.get(model, occurred), input_tokens, cached, output).quantize(Decimal("1e-10")),
            cost_source="computed", cache_hit=cache_hit, outcome=outcome,
            error_type="provider_5xx" if outcome == Outcome.ERROR else "",
            user_key=f"demo-user-{rng.randrange(40):02d}", request_id=f"req-{rng.getrandbits(48):012x}",
            occurred_at=occurred, rolled_up=True,
        ))
    return out


# --- SLOs and impact metrics for the demo features ------------------------------------------

# p95 latency (ms) and error-rate SLOs, chosen against the profiles above: the current versions'
# p95 is roughly median x e^(1.645 sigma) (summarizer ~1.6 s, refund drafter ~4.7 s, router
# ~0.7 s) and their error rates are under 1 %. SLO alerts judge 15-minute windows of as few as
# 20 calls, where one error is already 5 %, so the error SLOs sit at 5-6 %: replaying the seeded
# week minute by minute opens about a dozen short episodes, the two seeded spikes among them,
# instead of one every few hours. (The weekly guardrail targets in DEMO_IMPACT are stricter.)
DEMO_SLOS: dict[str, tuple[int, str]] = {
    "ticket-summarizer": (3000, "0.05"),
    "refund-drafter": (7000, "0.06"),
    "support-router": (1200, "0.05"),
}


@dataclass(frozen=True)
class DemoMetric:
    key: str
    name: str
    kind: str
    direction: str
    source: str = "reported"
    target: str | None = None
    unit: str = ""
    # Reported metrics only: the mean value two weeks ago and now (values drift linearly between).
    start: float = 0.0
    end: float = 0.0


DEMO_IMPACT: dict[str, tuple[DemoMetric, ...]] = {
    "ticket-summarizer": (
        DemoMetric("agent_accepted_rate", "Summaries accepted by the agent", "primary", "increase",
                   target="0.8", start=0.74, end=0.83),
        DemoMetric("p95_latency_ms", "p95 latency", "secondary", "decrease", source="p95_latency_ms"),
        DemoMetric("error_rate", "Error rate", "guardrail", "decrease", source="error_rate", target="0.02"),
    ),
    "refund-drafter": (
        DemoMetric("sent_unedited_rate", "Drafts sent without edits", "primary", "increase", target="0.6",
                   start=0.52, end=0.57),
        DemoMetric("cost_per_call_usd", "Cost per call", "secondary", "decrease", source="cost_per_call_usd"),
        DemoMetric("error_rate", "Error rate", "guardrail", "decrease", source="error_rate", target="0.03"),
    ),
    "support-router": (
        DemoMetric("rerouted_rate", "Tickets moved to another queue by an agent", "primary", "decrease",
                   target="0.05", start=0.071, end=0.046),
        DemoMetric("error_rate", "Error rate", "guardrail", "decrease", source="error_rate", target="0.01"),
    ),
}
REPORT_EVERY = timedelta(hours=6)  # how often the demo services "report" a value
REPORT_DAYS = 14


def demo_impact_seed(*, now: datetime | None = None) -> dict[str, int]:
    """Give the demo features SLOs (when they have none) and impact metric definitions with
    two weeks of reported values in production (when they have no definitions yet), so the
    dashboard shows SLO lines and the weekly review compares this week with the last.
    Idempotent; returns {"slos": n, "definitions": n, "values": n}."""
    now = (now or timezone.now()).astimezone(UTC)
    features = {f.key: f for f in Feature.objects.filter(key__in=DEMO_IMPACT.keys() | DEMO_SLOS.keys())}
    written = {"slos": 0, "definitions": 0, "values": 0}
    for key, (p95_ms, error_rate) in DEMO_SLOS.items():
        if key in features:
            # Seed data, set directly: there is no feature-edit service yet, and nothing else reads
            # these columns at write time. Only when unset, so an SLO someone changed stays.
            written["slos"] += Feature.objects.filter(
                pk=features[key].pk, slo_p95_latency_ms__isnull=True, slo_error_rate__isnull=True,
            ).update(slo_p95_latency_ms=p95_ms, slo_error_rate=Decimal(error_rate))
    production = Environment.objects.filter(key="production").first()
    rng = random.Random(20260102)
    for key, metrics in DEMO_IMPACT.items():
        feature = features.get(key)
        if feature is None or feature.metric_definitions.exists():
            continue
        values: list[dict[str, str]] = []
        for m in metrics:
            impact.metric_definition_create(feature=feature, key=m.key, name=m.name, kind=m.kind,
                                            direction=m.direction, source=m.source, target=m.target, unit=m.unit,
                                            actor=None)
            written["definitions"] += 1
            if m.source != "reported" or production is None:
                continue
            steps = int(timedelta(days=REPORT_DAYS) / REPORT_EVERY)
            for i in range(steps):
                at = now - REPORT_EVERY * (steps - i) + timedelta(minutes=rng.uniform(0, 30))
                mean = m.start + (m.end - m.start) * i / (steps - 1)
                value = min(1.0, max(0.0, rng.gauss(mean, 0.015)))
                values.append({"metric": m.key, "value": f"{value:.4f}", "recorded_at": at.isoformat()})
        if values:
            written["values"] += len(impact.metric_values_report(environment=production, feature=feature,
                                                                 values=values).accepted)
    return written
