"""Canary health verdict: is the canary arm worse than stable? `apps.rollouts` calls
`canary_health_verdict` every minute to advance a canary step, or to halt and roll back.

Four checks over a window of complete minutes, canary arm against stable arm:

- error rate and guardrail-blocked rate: an always-valid sequential test (a mixture
  likelihood-ratio test martingale, read below), so looking every minute does not inflate
  false alarms; each rate test runs at alpha / 2, so together they false-alarm with
  probability at most `alpha` over any number of looks.
- p95 latency and cost per call: tolerance rules, not statistical tests (canary p95 >
  stable p95 x 1.2 + 50 ms; canary cost per call > stable x 1.25), applied only once both arms
  have `min_calls`.

The method, its assumptions and the bound are written up in docs/canary-health.md.

The rate test, per minute t with canary calls n_c, stable calls n_s and x_c + x_s errors:
under H0 (every call in that minute errs with the same probability, whatever its arm), x_c
given the minute's totals is hypergeometric. We multiply, minute by minute, the likelihood
ratio of a binomial model in which the canary's error rate is theta times stable's
(Binomial(e, q) with q = theta*pi / (theta*pi + 1 - pi), pi = n_c / (n_c + n_s)) against
theta = 1. Each factor has expectation <= 1 under H0 (Hoeffding 1963: sampling without
replacement is smaller in convex order than with replacement, and the factor is convex in
x_c), so the product is a non-negative supermartingale; so is its average over a prior on
theta > 1. Ville's inequality: P(it ever reaches 1/alpha) <= alpha.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from apps.metrics import histogram

STATUS_HEALTHY = "healthy"
STATUS_UNHEALTHY = "unhealthy"
STATUS_INSUFFICIENT = "insufficient_data"

# Prior over the rate ratio theta (canary / stable) under the alternative: equal weights on
# a grid. Any fixed prior keeps the test valid; the grid spreads power over small and large
# regressions (more weight on big ones would make 10x faster to catch and 1.25x slower).
THETA_GRID: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass(frozen=True)
class HealthPolicy:
    """Thresholds of the verdict. Defaults are the playbook's; rollouts may pass its own."""

    min_calls: int = 100  # per arm before a canary can be called healthy
    alpha: float = 0.05  # false-alarm bound of the rate tests together, over unlimited looks
    latency_ratio: float = 1.2
    latency_slack_ms: float = 50.0
    cost_ratio: Decimal = Decimal("1.25")
    all_errors_min_calls: int = 10  # this many canary calls, all failed: unhealthy at once


@dataclass
class ArmMinute:
    """One arm's counts in one minute (summed over prompt versions and models)."""

    calls: int = 0
    errors: int = 0
    blocked: int = 0


@dataclass
class ArmTotals:
    calls: int = 0
    errors: int = 0
    blocked: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_histogram: list[int] = field(default_factory=histogram.empty)


@dataclass
class CanaryVerdict:
    status: str
    reasons: list[str]
    figures: dict[str, Any]
    window_start: datetime | None = None
    window_end: datetime | None = None

    @property
    def healthy(self) -> bool:
        return self.status == STATUS_HEALTHY

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["window_start"] = self.window_start.isoformat() if self.window_start else None
        out["window_end"] = self.window_end.isoformat() if self.window_end else None
        return out


# --- the sequential rate test (pure) -------------------------------------------------------

@lru_cache(maxsize=4096)
def _minute_logs(n_c: int, x_c: int, n_s: int, x_s: int, thetas: tuple[float, ...]) -> tuple[float, ...]:
    """log of one minute's likelihood ratio, rate ratio theta against 1, for each theta."""
    pi = n_c / (n_c + n_s)
    out = []
    for theta in thetas:
        q = theta * pi / (theta * pi + 1.0 - pi)
        out.append(x_c * math.log(q / pi) + x_s * math.log((1.0 - q) / (1.0 - pi)))
    return tuple(out)


def _clamp(log_value: float) -> float:
    return min(log_value, 700.0)


def rate_test_path(minutes: list[tuple[int, int, int, int]],
                   thetas: tuple[float, ...] = THETA_GRID) -> list[float]:
    """The mixture e-value after each minute. `minutes` holds (canary calls, canary events,
    stable calls, stable events) in time order. Minutes where one arm had no calls, or no
    events happened, carry no information and leave the value unchanged."""
    logs = [0.0] * len(thetas)
    path: list[float] = []
    current = 1.0
    for n_c, x_c, n_s, x_s in minutes:
        if n_c > 0 and n_s > 0 and (x_c + x_s) > 0:
            for i, value in enumerate(_minute_logs(n_c, x_c, n_s, x_s, thetas)):
                logs[i] += value
            # Equal prior weights; the clamp only matters far beyond any threshold.
            current = sum(map(math.exp, map(_clamp, logs))) / len(logs)
        path.append(current)
    return path


@dataclass
class RateTest:
    e_value: float  # at the end of the window
    max_e_value: float  # the largest over the window's minutes: what is compared
    threshold: float
    flagged: bool


def rate_test(minutes: list[tuple[int, int, int, int]], *, alpha: float) -> RateTest:
    """Flag when the evidence that the canary's rate is higher ever reached 1/alpha in the
    window (Ville's inequality bounds the chance of that under H0 by alpha)."""
    path = rate_test_path(minutes)
    threshold = 1.0 / alpha
    last = path[-1] if path else 1.0
    top = max(path, default=1.0)
    return RateTest(e_value=last, max_e_value=top, threshold=threshold, flagged=top >= threshold)


# --- the verdict (pure) --------------------------------------------------------------------

def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _arm_figures(arm: ArmTotals) -> dict[str, Any]:
    p95 = histogram.percentile(arm.latency_histogram, 0.95)
    cost_per_call = (arm.cost_usd / arm.calls) if arm.calls else None
    return {
        "calls": arm.calls,
        "errors": arm.errors,
        "blocked": arm.blocked,
        "error_rate": _rate(arm.errors, arm.calls),
        "blocked_rate": _rate(arm.blocked, arm.calls),
        "p95_latency_ms": round(p95, 1) if p95 is not None else None,
        "cost_usd": str(arm.cost_usd),
        "cost_per_call_usd": str(cost_per_call.quantize(Decimal("0.0000000001"))) if cost_per_call is not None
        else None,
    }


def verdict_from_minutes(
    minutes: list[tuple[ArmMinute, ArmMinute]],
    canary: ArmTotals,
    stable: ArmTotals,
    *,
    policy: HealthPolicy | None = None,
) -> CanaryVerdict:
    """The verdict from per-minute counts (canary, stable) in time order and the window's
    totals per arm. Pure: tests feed it simulated streams."""
    policy = policy or HealthPolicy()
    reasons: list[str] = []
    fig_c, fig_s = _arm_figures(canary), _arm_figures(stable)
    figures: dict[str, Any] = {"canary": fig_c, "stable": fig_s, "checks": {}, "policy": {
        "min_calls": policy.min_calls, "alpha": policy.alpha, "latency_ratio": policy.latency_ratio,
        "latency_slack_ms": policy.latency_slack_ms, "cost_ratio": str(policy.cost_ratio),
    }}
    checks = figures["checks"]

    if canary.calls == 0:
        return CanaryVerdict(STATUS_INSUFFICIENT, ["no canary calls in the window"], figures)

    unhealthy = False
    if canary.errors >= canary.calls and canary.calls >= policy.all_errors_min_calls:
        reasons.append(f"every canary call failed ({canary.calls} of {canary.calls})")
        unhealthy = True

    # Rate tests: valid at any sample size, so they may fail a canary early.
    for name, attr, label in (("error_rate", "errors", "error rate"), ("blocked_rate", "blocked", "blocked rate")):
        series = [(c.calls, getattr(c, attr), s.calls, getattr(s, attr)) for c, s in minutes]
        test = rate_test(series, alpha=policy.alpha / 2)
        checks[name] = {
            "method": "mixture sequential likelihood-ratio test (always valid)",
            "canary": fig_c[name], "stable": fig_s[name],
            "e_value": round(test.e_value, 4), "max_e_value": round(test.max_e_value, 4),
            "threshold": test.threshold, "flagged": test.flagged,
        }
        if test.flagged:
            unhealthy = True
            reasons.append(
                f"canary {label} {_pct(fig_c[name])} is higher than stable {_pct(fig_s[name])} "
                f"(evidence {test.max_e_value:.1f} >= {test.threshold:.0f}, always-valid test at "
                f"alpha {policy.alpha / 2:g})"
            )

    enough = canary.calls >= policy.min_calls and stable.calls >= policy.min_calls
    if not enough:
        checks["p95_latency_ms"] = {"method": "tolerance rule", "skipped": "too few calls"}
        checks["cost_per_call_usd"] = {"method": "tolerance rule", "skipped": "too few calls"}
        if unhealthy:
            return CanaryVerdict(STATUS_UNHEALTHY, reasons, figures)
        need = []
        if canary.calls < policy.min_calls:
            need.append(f"canary has {canary.calls} calls, needs {policy.min_calls}")
        if stable.calls < policy.min_calls:
            need.append(f"stable has {stable.calls} calls, needs {policy.min_calls}")
        return CanaryVerdict(STATUS_INSUFFICIENT, [f"too few calls: {'; '.join(need)}"], figures)

    # Latency: a tolerance rule on p95 read from the merged histograms.
    p95_c, p95_s = fig_c["p95_latency_ms"], fig_s["p95_latency_ms"]
    if p95_c is None or p95_s is None:
        checks["p95_latency_ms"] = {"method": "tolerance rule", "skipped": "no latency recorded"}
    else:
        limit = p95_s * policy.latency_ratio + policy.latency_slack_ms
        flagged = p95_c > limit
        checks["p95_latency_ms"] = {"method": "tolerance rule", "canary": p95_c, "stable": p95_s,
                                    "limit": round(limit, 1), "flagged": flagged}
        if flagged:
            unhealthy = True
            reasons.append(f"canary p95 latency {p95_c:.0f} ms exceeds stable {p95_s:.0f} ms x "
                           f"{policy.latency_ratio:g} + {policy.latency_slack_ms:g} ms = {limit:.0f} ms")

    # Cost per call: a tolerance rule; skipped when an arm has no priced calls.
    if canary.cost_usd <= 0 or stable.cost_usd <= 0:
        checks["cost_per_call_usd"] = {"method": "tolerance rule", "skipped": "no cost recorded for an arm"}
    else:
        cpc_c, cpc_s = canary.cost_usd / canary.calls, stable.cost_usd / stable.calls
        limit_cost = cpc_s * policy.cost_ratio
        flagged = cpc_c > limit_cost
        checks["cost_per_call_usd"] = {"method": "tolerance rule", "canary": fig_c["cost_per_call_usd"],
                                       "stable": fig_s["cost_per_call_usd"],
                                       "limit": str(limit_cost.quantize(Decimal("0.0000000001"))),
                                       "flagged": flagged}
        if flagged:
            unhealthy = True
            reasons.append(f"canary cost per call ${cpc_c:.6f} exceeds stable ${cpc_s:.6f} x {policy.cost_ratio}")

    if unhealthy:
        return CanaryVerdict(STATUS_UNHEALTHY, reasons, figures)
    return CanaryVerdict(STATUS_HEALTHY, [
        f"no regression found over {canary.calls} canary and {stable.calls} stable calls"
    ], figures)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f} %"


# --- reading the rollups -------------------------------------------------------------------

def _window(now: datetime | None, window_minutes: int, since: datetime | None) -> tuple[datetime, datetime]:
    """Complete minutes only: the current minute's rollup is still growing."""
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=window_minutes)
    if since is not None:
        start = max(start, since)
    return start, end


def canary_health_inputs(*, feature, environment, start: datetime, end: datetime,
                         canary_version: str | None = None):
    """Per-minute counts and per-arm totals from CallRollup for [start, end). Two queries:
    sums per minute and arm in the database, histograms merged here."""
    from apps.metrics.models import CallRollup

    qs = CallRollup.objects.filter(feature=feature, environment=environment, minute__gte=start, minute__lt=end,
                                   arm__in=("canary", "stable"))
    if canary_version:
        # Only the canary version's calls count for the canary arm (an earlier canary's don't).
        qs = qs.filter(Q(arm="stable") | Q(arm="canary", prompt_version=canary_version))
    rows = (qs.values("minute", "arm").annotate(calls=Sum("calls"), errors=Sum("errors"), blocked=Sum("blocked"),
                                                cost=Sum("cost_usd")).order_by("minute"))
    per_minute: dict[datetime, tuple[ArmMinute, ArmMinute]] = {}
    totals = {"canary": ArmTotals(), "stable": ArmTotals()}
    for row in rows:
        pair = per_minute.setdefault(row["minute"], (ArmMinute(), ArmMinute()))
        minute = pair[0] if row["arm"] == "canary" else pair[1]
        minute.calls += row["calls"] or 0
        minute.errors += row["errors"] or 0
        minute.blocked += row["blocked"] or 0
        total = totals[row["arm"]]
        total.calls += row["calls"] or 0
        total.errors += row["errors"] or 0
        total.blocked += row["blocked"] or 0
        total.cost_usd += row["cost"] or Decimal(0)
    hists: dict[str, list[list[int]]] = {"canary": [], "stable": []}
    for arm, hist in qs.values_list("arm", "latency_histogram").iterator():
        hists[arm].append(hist or [])
    for arm, total in totals.items():
        total.latency_histogram = histogram.merge(hists[arm])
    minutes = [per_minute[m] for m in sorted(per_minute)]
    return minutes, totals["canary"], totals["stable"]


def canary_health_verdict(
    *,
    feature,
    environment,
    now: datetime | None = None,
    window_minutes: int = 60,
    since: datetime | None = None,
    canary_version: str | None = None,
    policy: HealthPolicy | None = None,
) -> CanaryVerdict:
    """Canary against stable for `feature` in `environment` over the last `window_minutes`
    complete minutes (starting no earlier than `since`, e.g. when the canary step began: the
    false-alarm bound holds for looks that share a start). `canary_version` limits the canary
    arm to that prompt version's calls."""
    start, end = _window(now, window_minutes, since)
    minutes, canary, stable = canary_health_inputs(feature=feature, environment=environment, start=start, end=end,
                                                   canary_version=canary_version)
    verdict = verdict_from_minutes(minutes, canary, stable, policy=policy)
    verdict.window_start, verdict.window_end = start, end
    return verdict
