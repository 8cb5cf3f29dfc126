"""Dashboard benchmark: the 30-day feature dashboard read from per-minute rollups (before)
and from per-hour rollups (after), on the same data.

    .venv/bin/python tests/bench/dashboard.py [--days 30] [--rounds 5] [--calls-per-minute 20]
                                              [--database-url URL]

It creates its own database (a fresh SQLite file under var/bench/, or the Postgres database
named by --database-url, dropped and re-created, and dropped again at the end), migrates it
and creates environment "production" and one feature with two prompt versions through the
real services. Then it writes N days of per-minute rollups for 1 feature x 2 arms (stable
1.0.0, canary 1.1.0 at ~5 %) x 1 model, one row per minute per arm (86,400 rows for 30 days),
each with a latency histogram drawn from a lognormal. Rolling real events up for 43,200
minutes would take too long, so the minute rows are written directly (bulk_create, a day at a
time) and the hour rows are built from them with `apps.metrics.rollups.rollup_hours_add`,
which runs the same `_add_into` upsert `rollup_pending` uses for both levels. That write is
timed too.

Then, in interleaved rounds, it times `apps.metrics.dashboards.feature_dashboard` for the
"30d" preset (30 daily buckets, split by version and arm; the page's only rollup read):

    before   the same code with `selectors.rollup_source` forced to the per-minute rows
    after    as shipped: ranges longer than 48 h on whole hours read the per-hour rows

and, to show where the time goes, the bare read + JSON decode of the histograms of each
table for the same window (which decides whether storing histograms more compactly would
pay). Prints the median and the best of the rounds. Figures only: nothing here asserts on
timings.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from datetime import UTC, timedelta
from decimal import Decimal
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.config_poll import BENCH_DIR, database_create, database_drop, is_postgres, machine  # noqa: E402


def setup(url: str) -> None:
    os.environ.update(DJANGO_SETTINGS_MODULE="controlplane.settings", DATABASE_URL=url,
                      SECRET_KEY="bench-" + "k" * 50, DEBUG="0", LOG_LEVEL="WARNING")
    os.environ.pop("SECRET_KEY_FILE", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def seed(args) -> dict:
    """The feature, then `days` of minute rows and their hour rows; returns what was written."""
    from django.db import transaction
    from django.utils import timezone

    from apps.core.services import environment_create
    from apps.metrics import histogram
    from apps.metrics.models import CallRollup, CallRollupHour
    from apps.metrics.rollups import rollup_hours_add
    from apps.prompts.services import feature_create, prompt_version_create

    environment = environment_create(key="production", name="Production")
    feature = feature_create(key="bench-summarizer", name="Bench summarizer", description="benchmark",
                             runbook_url="https://example.invalid/runbook", oncall_contact="oncall@example.invalid")
    for version in ("1.0.0", "1.1.0"):
        prompt_version_create(feature=feature, version=version, model="gpt-4o-mini", template="Summarise {{ t }}")
    rng = random.Random(42)
    end = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    start = end - timedelta(days=args.days)
    write_minutes = write_hours = 0.0
    for day in range(args.days):
        rows = []
        for m in range(1440):
            minute = start + timedelta(days=day, minutes=m)
            daily = 1 + 0.6 * math.sin((minute.hour - 9) / 24 * 2 * math.pi)
            total = max(1, round(rng.gauss(args.calls_per_minute * daily, 3)))
            canary = max(1, round(total * 0.05))
            for version, arm, calls, median in (("1.0.0", "stable", total - canary, 700),
                                                ("1.1.0", "canary", canary, 800)):
                h, latency_sum = histogram.empty(), 0
                for _ in range(calls):
                    latency = max(1, round(rng.lognormvariate(math.log(median), 0.45)))
                    histogram.add(h, latency)
                    latency_sum += latency
                errors = sum(rng.random() < 0.01 for _ in range(calls))
                rows.append(CallRollup(
                    minute=minute, environment=environment, feature=feature, prompt_version=version, arm=arm,
                    model="gpt-4o-mini", calls=calls, errors=errors, cache_hits=calls // 4,
                    input_tokens=calls * 900, cached_tokens=calls * 150, output_tokens=calls * 140,
                    cost_usd=(Decimal(calls) * Decimal("0.000219")).quantize(Decimal("1e-10")),
                    latency_sum_ms=latency_sum, latency_histogram=h))
        t0 = time.perf_counter()
        with transaction.atomic():
            CallRollup.objects.bulk_create(rows, batch_size=1000)
            t1 = time.perf_counter()
            rollup_hours_add(minute_rows=rows)
        t2 = time.perf_counter()
        write_minutes += t1 - t0
        write_hours += t2 - t1
    stable = CallRollup.objects.filter(arm="stable").values_list("latency_histogram", flat=True)[:2000]
    return {"feature": feature, "environment": environment, "minute_rows": CallRollup.objects.count(),
            "hour_rows": CallRollupHour.objects.count(), "write_minutes_s": write_minutes,
            "write_hours_s": write_hours, "buckets": histogram.SIZE,
            "nonzero_buckets": statistics.median(sum(1 for n in h if n) for h in stable)}


def timed(call) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def run(args, seeded: dict) -> dict[str, list[float]]:
    from apps.metrics import dashboards, selectors
    from apps.metrics.models import CallRollup, CallRollupHour

    feature, environment = seeded["feature"], seeded["environment"]
    time_range = dashboards.time_range_parse(range_key="30d")
    assert selectors.rollup_source(since=time_range.start, until=time_range.end)[0] is CallRollupHour

    def dashboard():
        return dashboards.feature_dashboard(feature=feature, environment=environment, time_range=time_range)

    def before():
        with mock.patch.object(selectors, "rollup_source", lambda **_: (CallRollup, "minute")):
            return dashboard()

    def decode(model, column):
        rows = model.objects.filter(feature=feature, environment=environment,
                                    **{f"{column}__gte": time_range.start, f"{column}__lt": time_range.end})
        return len(list(rows.values_list("latency_histogram", flat=True).iterator(chunk_size=2000)))

    cases = {"before": before, "after": dashboard,
             "decode minute rows": lambda: decode(CallRollup, "minute"),
             "decode hour rows": lambda: decode(CallRollupHour, "hour")}
    figures: dict[str, list[float]] = {name: [] for name in cases}
    check: dict[str, tuple] = {}
    dashboard()  # warm up (imports, connection)
    for _ in range(args.rounds):
        for name, call in cases.items():
            seconds, result = timed(call)
            figures[name].append(seconds)
            if name in ("before", "after"):
                check[name] = (result.total.calls, result.total.errors, result.total.cost_usd,
                               result.total.p50_ms, result.total.p95_ms, result.total.p99_ms)
    figures["same figures"] = check["before"] == check["after"]
    figures["totals"] = check["after"]
    figures["totals before"] = check["before"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls-per-minute", type=int, default=20)
    parser.add_argument("--database-url", default=None,
                        help="postgres://... (dropped and re-created) or sqlite:///path; default a SQLite file "
                             "under var/bench/")
    args = parser.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{BENCH_DIR / 'dashboard.sqlite3'}"
    database_create(url)
    try:
        setup(url)
        seeded = seed(args)
        figures = run(args, seeded)
    finally:
        from django.db import connections

        connections.close_all()
        database_drop(url)

    print(f"machine: {machine()}")
    print(f"database: {'postgres' if is_postgres(url) else 'sqlite'}; {args.days} days, 1 feature x 2 arms x 1 model")
    print(f"rows: {seeded['minute_rows']} per-minute, {seeded['hour_rows']} per-hour; histograms of "
          f"{seeded['buckets']} buckets, median {seeded['nonzero_buckets']} non-zero in a stable-arm minute row")
    print(f"write: minute rows {seeded['write_minutes_s']:.2f} s (bulk_create), hour rows from them "
          f"{seeded['write_hours_s']:.2f} s (rollup_hours_add)")
    print(f"30-day dashboard figures identical before/after: {figures['same figures']} "
          f"(calls, errors, cost, p50, p95, p99 = {json.dumps(figures['totals'], default=str)})")
    if not figures["same figures"]:
        print(f"  before: {json.dumps(figures['totals before'], default=str)}")
    print(f"{'case':<22}{'median ms':>12}{'best ms':>10}   ({args.rounds} rounds)")
    for name in ("before", "after", "decode minute rows", "decode hour rows"):
        values = figures[name]
        print(f"{name:<22}{statistics.median(values) * 1000:>12.1f}{min(values) * 1000:>10.1f}")
    before, after = statistics.median(figures["before"]), statistics.median(figures["after"])
    print(f"speed-up of the 30-day dashboard: {before / after:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
