"""Dashboard reads: time series and totals for one feature in one environment, split by
prompt version and arm; the overview's per-feature figures; budget gauges; CSV rows.

Everything comes from the rollups through apps.metrics.selectors.rollup_series (never from
raw CallEvents), in two queries whatever the range or the number of versions: one grouped
`Sum` in the database (per time bucket x version x arm) and one read of the latency
histograms of the same rows, merged in Python because percentiles do not add up. Buckets are
UTC hours for ranges up to 48 hours and UTC days beyond; ranges longer than 48 hours are
whole hours, so they read the per-hour rollups (60x fewer rows than per minute)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from operator import add

from django.utils import timezone

from apps.core.errors import ValidationFailed
from apps.core.models import Environment
from apps.metrics import budgets, histogram
from apps.metrics.models import BudgetUsage
from apps.metrics.selectors import rollup_series
from apps.prompts.models import Feature

PRESETS: dict[str, str] = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days"}
DEFAULT_RANGE = "7d"
HOURLY_UP_TO = timedelta(hours=48)
MAX_SPAN = timedelta(days=400)
ARM_ORDER = {"stable": 0, "canary": 1}

COUNTERS = ("calls", "errors", "blocked", "budget_blocked", "cache_hits", "input_tokens", "cached_tokens",
            "output_tokens", "latency_sum_ms")

CSV_COLUMNS = ("bucket_start_utc", "environment", "feature", "prompt_version", "arm", "calls", "errors",
               "error_rate", "blocked", "budget_blocked", "cache_hits", "cache_hit_rate", "input_tokens",
               "cached_tokens", "output_tokens", "total_tokens", "cost_usd", "mean_latency_ms", "p50_latency_ms",
               "p95_latency_ms", "p99_latency_ms")


# --- time ranges -------------------------------------------------------------------------

@dataclass(frozen=True)
class TimeRange:
    """[start, end) in UTC, aligned to whole buckets. `key` is a preset or "custom"."""

    key: str
    start: datetime
    end: datetime
    bucket: str  # "hour" | "day"
    from_text: str = ""
    to_text: str = ""

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.bucket == "hour" else timedelta(days=1)

    @property
    def bucket_starts(self) -> list[datetime]:
        out, t = [], self.start
        while t < self.end:
            out.append(t)
            t += self.step
        return out

    @property
    def days(self) -> Decimal:
        return Decimal((self.end - self.start).total_seconds()) / Decimal(86400)

    @property
    def label(self) -> str:
        if self.key in PRESETS:
            return PRESETS[self.key]
        last = self.end - self.step
        fmt = "%Y-%m-%d %H:00" if self.bucket == "hour" else "%Y-%m-%d"
        return f"{self.start:{fmt}} to {last:{fmt}} UTC"

    def bucket_label(self, t: datetime) -> str:
        return f"{t:%d %b %H:00}" if self.bucket == "hour" else f"{t:%a %d %b}"

    def query(self) -> dict[str, str]:
        """The GET parameters that select this range again (links, CSV export)."""
        if self.key == "custom":
            return {"range": "custom", "from": self.from_text, "to": self.to_text}
        return {"range": self.key}


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?$")


MIN_YEAR, MAX_YEAR = 1970, 9998


def _parse_moment(text: str, *, name: str, is_end: bool) -> datetime:
    """A date (a whole UTC day: `to` includes it) or a UTC date-time as a datetime-local
    input sends it."""
    text = text.strip()
    moment = None
    try:
        if _DATE.match(text):
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(0), tzinfo=UTC)
            moment = moment + timedelta(days=1) if is_end else moment
        elif _DATETIME.match(text):
            moment = datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        moment = None
    # Years near datetime's limits overflow when a bucket is rounded up: telemetry is never there.
    if moment is not None and MIN_YEAR <= moment.year <= MAX_YEAR:
        return moment
    if moment is not None:
        raise ValidationFailed(f"'{name}' must be between {MIN_YEAR} and {MAX_YEAR}, not '{text[:40]}'",
                               code="invalid_range", details={"field": name})
    raise ValidationFailed(f"'{name}' must be a date like 2026-01-31 or a UTC time like 2026-01-31T14:00, "
                           f"not '{text[:40]}'", code="invalid_range", details={"field": name})


def _floor(t: datetime, bucket: str) -> datetime:
    t = t.astimezone(UTC)
    if bucket == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil(t: datetime, bucket: str) -> datetime:
    floored = _floor(t, bucket)
    if floored == t:
        return floored
    return floored + (timedelta(hours=1) if bucket == "hour" else timedelta(days=1))


def time_range_parse(*, range_key: str | None = None, from_text: str | None = None, to_text: str | None = None,
                     now: datetime | None = None) -> TimeRange:
    """The range a dashboard asked for with `?range=24h|7d|30d` or `?range=custom&from=&to=`.
    Presets end with the current (partial) bucket. Bad input raises ValidationFailed with a
    message meant for the person who typed it."""
    now = now or timezone.now()
    range_key = (range_key or "").strip()
    from_text, to_text = (from_text or "").strip(), (to_text or "").strip()
    if range_key == "custom" or (not range_key and (from_text or to_text)):
        if not from_text or not to_text:
            raise ValidationFailed("A custom range needs both 'from' and 'to'.", code="invalid_range")
        start = _parse_moment(from_text, name="from", is_end=False)
        end = _parse_moment(to_text, name="to", is_end=True)
        if start >= end:
            raise ValidationFailed(f"'from' ({from_text}) must be before 'to' ({to_text}).", code="invalid_range")
        if end - start > MAX_SPAN:
            raise ValidationFailed(f"A range can span at most {MAX_SPAN.days} days.", code="invalid_range")
        bucket = "hour" if end - start <= HOURLY_UP_TO else "day"
        return TimeRange("custom", _floor(start, bucket), _ceil(end, bucket), bucket, from_text, to_text)
    range_key = range_key or DEFAULT_RANGE
    if range_key not in PRESETS:
        choices = ", ".join(PRESETS)
        raise ValidationFailed(f"Unknown range '{range_key[:20]}': choose {choices} or custom.", code="invalid_range")
    if range_key == "24h":
        end = _floor(now, "hour") + timedelta(hours=1)
        return TimeRange(range_key, end - timedelta(hours=24), end, "hour")
    days = int(range_key.removesuffix("d"))
    end = _floor(now, "day") + timedelta(days=1)
    return TimeRange(range_key, end - timedelta(days=days), end, "day")


# --- figures -----------------------------------------------------------------------------

@dataclass
class Figures:
    """Summed counters of some rollup rows plus their merged latency histogram."""

    calls: int = 0
    errors: int = 0
    blocked: int = 0
    budget_blocked: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    latency_sum_ms: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_histogram: list[int] = field(default_factory=histogram.empty)

    def add_sums(self, row: dict) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + (row.get(name) or 0))
        self.cost_usd += Decimal(row.get("cost_usd") or 0)

    def add_histogram(self, h: list[int]) -> None:
        if len(h) == histogram.SIZE:
            self.latency_histogram = list(map(add, self.latency_histogram, h))  # C speed: the hot loop
            return
        total = self.latency_histogram
        for i, n in enumerate(h[:histogram.SIZE]):
            if n:
                total[i] += n

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cache_hits / self.calls if self.calls else None

    @property
    def blocked_rate(self) -> float | None:
        return self.blocked / self.calls if self.calls else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_sum_ms / self.calls if self.calls else None

    @property
    def cost_per_call(self) -> Decimal | None:
        return self.cost_usd / self.calls if self.calls else None

    def p(self, q: float) -> float | None:
        return histogram.percentile(self.latency_histogram, q)

    @property
    def p50_ms(self) -> float | None:
        return self.p(0.50)

    @property
    def p95_ms(self) -> float | None:
        return self.p(0.95)

    @property
    def p99_ms(self) -> float | None:
        return self.p(0.99)


def _version_key(version: str) -> tuple:
    parts = re.split(r"[.+-]", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _series_sort_key(key: tuple[str, str]) -> tuple:
    version, arm = key
    return (_version_key(version), ARM_ORDER.get(arm, 9), arm)


@dataclass
class Series:
    version: str
    arm: str
    buckets: list[Figures]
    total: Figures

    @property
    def name(self) -> str:
        return f"v{self.version or '?'} {self.arm}"


@dataclass
class FeatureDashboard:
    feature: Feature
    environment: Environment
    time_range: TimeRange
    bucket_starts: list[datetime]
    series: list[Series]
    total: Figures
    per_bucket: list[Figures]  # all versions together

    @property
    def has_data(self) -> bool:
        return self.total.calls > 0

    @property
    def cost_per_day(self) -> Decimal:
        return self.total.cost_usd / self.time_range.days if self.time_range.days else Decimal(0)


def feature_dashboard(*, feature: Feature, environment: Environment, time_range: TimeRange) -> FeatureDashboard:
    """Per bucket x prompt version x arm figures for one feature in one environment. Two
    queries whatever the range or the number of versions."""
    starts = time_range.bucket_starts
    index = {t: i for i, t in enumerate(starts)}
    by_key: dict[tuple[str, str], list[Figures]] = {}
    per_bucket = [Figures() for _ in starts]
    total = Figures()
    for row in rollup_series(feature=feature, environment=environment, since=time_range.start,
                             until=time_range.end, bucket=time_range.bucket, group_by=("prompt_version", "arm")):
        i = index.get(row["t"])
        if i is None:
            continue
        key = (row["prompt_version"], row["arm"])
        if key not in by_key:
            by_key[key] = [Figures() for _ in starts]
        for figures in (by_key[key][i], per_bucket[i], total):
            figures.add_sums(row)
            figures.add_histogram(row["histogram"])

    series = []
    for key in sorted(by_key, key=_series_sort_key):
        s_total = Figures()
        for f in by_key[key]:
            s_total.add_sums(_as_row(f))
            s_total.add_histogram(f.latency_histogram)
        series.append(Series(version=key[0], arm=key[1], buckets=by_key[key], total=s_total))
    return FeatureDashboard(feature=feature, environment=environment, time_range=time_range, bucket_starts=starts,
                            series=series, total=total, per_bucket=per_bucket)


def _as_row(f: Figures) -> dict:
    return {name: getattr(f, name) for name in (*COUNTERS, "cost_usd")}


def _num(value: float | Decimal | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def dashboard_chart_data(dash: FeatureDashboard) -> dict:
    """What static/shipway/dashboard.js draws: JSON-safe numbers (floats; money rounded to
    micro-dollars), None where a bucket has no calls (a gap, not a zero)."""
    feature = dash.feature
    return {
        "feature": feature.key,
        "environment": dash.environment.key,
        "bucket": dash.time_range.bucket,
        "labels": [dash.time_range.bucket_label(t) for t in dash.bucket_starts],
        "starts": [t.isoformat().replace("+00:00", "Z") for t in dash.bucket_starts],
        "slo": {"p95_latency_ms": feature.slo_p95_latency_ms,
                "error_rate": _num(feature.slo_error_rate)},
        "series": [
            {
                "name": s.name, "version": s.version, "arm": s.arm,
                "calls": [f.calls for f in s.buckets],
                "error_rate": [_num(f.error_rate) for f in s.buckets],
                "p50_ms": [_num(f.p50_ms, 1) for f in s.buckets],
                "p95_ms": [_num(f.p95_ms, 1) for f in s.buckets],
                "tokens": [f.tokens for f in s.buckets],
                "cost_usd": [_num(f.cost_usd) for f in s.buckets],
                "cache_hit_rate": [_num(f.cache_hit_rate) for f in s.buckets],
            }
            for s in dash.series
        ],
    }


def _fmt(value: float | Decimal | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """Text that services sent (a prompt version is accepted even when unknown) is never a
    spreadsheet formula: a cell starting with = + - @ or a control character gets a leading
    apostrophe (OWASP's advice against CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def dashboard_csv_rows(dash: FeatureDashboard):
    """CSV_COLUMNS rows: one per bucket x version x arm that has any calls, oldest first."""
    yield CSV_COLUMNS
    for i, start in enumerate(dash.bucket_starts):
        for s in dash.series:
            f = s.buckets[i]
            if not f.calls:
                continue
            yield (start.isoformat().replace("+00:00", "Z"), dash.environment.key, dash.feature.key,
                   csv_text(s.version), csv_text(s.arm), f.calls, f.errors, _fmt(f.error_rate, 6), f.blocked,
                   f.budget_blocked, f.cache_hits,
                   _fmt(f.cache_hit_rate, 6), f.input_tokens, f.cached_tokens, f.output_tokens, f.tokens,
                   _fmt(f.cost_usd, 10), _fmt(f.mean_latency_ms, 1), _fmt(f.p50_ms, 1), _fmt(f.p95_ms, 1),
                   _fmt(f.p99_ms, 1))


# --- overview ----------------------------------------------------------------------------

@dataclass
class OverviewCell:
    environment: Environment
    total: Figures
    calls_per_bucket: list[int]

    @property
    def sparkline(self) -> str:
        return sparkline_points(self.calls_per_bucket)


def sparkline_bucket(time_range: TimeRange) -> str:
    """Overview sparklines are hourly up to a week (a day's shape shows), daily beyond."""
    return "hour" if time_range.end - time_range.start <= timedelta(days=7) else "day"


def overview_figures(*, features: list[Feature], environments: list[Environment],
                     time_range: TimeRange) -> dict[tuple[int, int], OverviewCell]:
    """(feature id, environment id) -> totals and calls per bucket, for every pair, in two
    queries whatever the number of features. Sparklines are hourly up to a week."""
    time_range = replace(time_range, bucket=sparkline_bucket(time_range))
    starts = time_range.bucket_starts
    index = {t: i for i, t in enumerate(starts)}
    cells = {(f.id, e.id): OverviewCell(e, Figures(), [0] * len(starts)) for f in features for e in environments}
    rows = rollup_series(feature=list(features), environment=list(environments), since=time_range.start,
                         until=time_range.end, bucket=time_range.bucket, group_by=("feature_id", "environment_id"))
    for row in rows:
        cell = cells.get((row["feature_id"], row["environment_id"]))
        i = index.get(row["t"])
        if cell is None or i is None:
            continue
        cell.total.add_sums(row)
        cell.total.add_histogram(row["histogram"])
        cell.calls_per_bucket[i] += row["calls"]
    return cells


def sparkline_points(values: list[int | float], *, width: int = 120, height: int = 28) -> str:
    """SVG polyline points for a small inline chart (rendered server-side: no JS needed)."""
    if not values:
        return ""
    top = max(values) or 1
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))


# --- budgets -----------------------------------------------------------------------------

@dataclass
class BudgetGauge:
    label: str
    unit: str
    cap: Decimal
    spent: Decimal
    reserved: Decimal
    resets_at: datetime | None
    note: str = ""

    @property
    def ratio(self) -> float:
        return float((self.spent + self.reserved) / self.cap) if self.cap else 0.0

    @property
    def percent(self) -> int:
        return round(self.ratio * 100)

    @property
    def level(self) -> str:
        return "crossed" if self.ratio >= 1 else "high" if self.ratio >= 0.8 else "warn" if self.ratio >= 0.5 \
            else "ok"


def budget_gauges(*, feature: Feature, now: datetime | None = None) -> list[BudgetGauge]:
    """The feature's monthly ceiling and the most-spending user's share of the daily cap,
    for the current periods (apps.metrics.budgets.budget_status; spent + reserved vs cap).
    At most five queries, whatever the data."""
    now = now or timezone.now()
    status = budgets.budget_status(feature=feature, now=now)
    if not status["configured"]:
        return []
    top = None
    if status.get("user_daily_cap") is not None:
        day_start, _ = budgets.period_bounds(scope=budgets.USER_DAY, zone=budgets.zone_get(status["time_zone"]),
                                             at=now)
        top = (BudgetUsage.objects.filter(feature=feature, scope=budgets.USER_DAY, period_start=day_start,
                                          unit=status["user_daily_unit"])
               .order_by("-spent", "subject").first())
        if top is not None:
            status = budgets.budget_status(feature=feature, user_key=top.subject, now=now)
    gauges = []
    month = status["scopes"].get(budgets.FEATURE_MONTH)
    if month:
        gauges.append(BudgetGauge(label="Feature, this month", unit=month["unit"], cap=month["cap"],
                                  spent=month["spent"], reserved=month["reserved"], resets_at=month["resets_at"],
                                  note="exhausted: calls are refused" if status.get("exhausted") else ""))
    user = status["scopes"].get(budgets.USER_DAY)
    if user:
        gauges.append(BudgetGauge(label="Top user, today", unit=user["unit"], cap=user["cap"], spent=user["spent"],
                                  reserved=user["reserved"], resets_at=user["resets_at"],
                                  note=f"user {user['subject'][:12]}"))
    elif status.get("user_daily_cap") is not None:
        gauges.append(BudgetGauge(label="Top user, today", unit=status["user_daily_unit"],
                                  cap=status["user_daily_cap"], spent=Decimal(0), reserved=Decimal(0),
                                  resets_at=None, note="no spend yet today"))
    return gauges
