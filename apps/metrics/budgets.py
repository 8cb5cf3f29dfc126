"""Budgets: a feature's per-request token cap, per-user daily cap and per-feature monthly
ceiling (USD or tokens), with their periods, reservations, settlement and alerts.

- A period is a local calendar day (user scope) or month (feature scope) in the budget's
  `time_zone`; `BudgetUsage.period_start` stores the period's start as an aware UTC instant.
- `budget_check` reserves before the call: it row-locks the usage rows, admits the request
  iff spent + reserved + amount <= cap for every scope, and holds the amount in `reserved`
  through a `BudgetReservation` (expires after RESERVATION_TTL).
- `budget_events_settle` (called by ingest, inside its transaction) adds the events' cost or
  tokens to `spent` and releases their reservations; `budget_reservations_expire` (beat,
  every minute) releases the reservations no event ever settled.
- Alerts at 50 / 80 / 100 % of spent fire once per period and threshold (`alerts.alert_open`);
  crossing several thresholds at once fires only the highest.
- The config snapshot serves `budget.max_tokens_per_request` and `budget.exhausted`
  (`Budget.exhausted_until`); when either changes, `budget_served_changed` is sent inside the
  transaction and `apps.rollouts` rebuilds the snapshots (metrics must not import rollouts).
"""
import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from apps.core import roles
from apps.core.errors import ValidationFailed
from apps.core.services import audit_event_record
from apps.metrics.alerts import alert_open, alert_resolve, alerts_open, dedupe_key_fit, webhook_target_refusal
from apps.metrics.models import Alert, Budget, BudgetReservation, BudgetUsage, CallEvent, Outcome
from apps.prompts.models import Feature

logger = logging.getLogger(__name__)

USD = Budget.Unit.USD
TOKENS = Budget.Unit.TOKENS
USER_DAY = BudgetUsage.Scope.USER_DAY
FEATURE_MONTH = BudgetUsage.Scope.FEATURE_MONTH
THRESHOLDS = (50, 80, 100)
RESERVATION_TTL = timedelta(minutes=15)
ZERO = Decimal(0)

# Sent (inside the transaction) when what the config snapshot serves about budgets changes:
# `feature_ids` is the list of features concerned. apps.rollouts rebuilds the snapshots.
budget_served_changed = Signal()


# --- periods -------------------------------------------------------------------------------

def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def zone_get(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationFailed(f"Unknown time zone '{name}'", code="invalid_time_zone",
                               details={"time_zone": [f"'{name}' is not an IANA time zone name"]}) from None


def period_bounds(*, scope: str, zone: ZoneInfo, at: datetime) -> tuple[datetime, datetime]:
    """The period containing `at`: (start as UTC, end as an aware time in `zone`)."""
    local = at.astimezone(zone)
    if scope == USER_DAY:
        first = local.date()
        after = first + timedelta(days=1)
    else:
        first = local.date().replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(after, time(0), tzinfo=zone)
    # Round-trip through UTC so a wall-clock time a DST jump skips still gets a real offset.
    return start.astimezone(UTC), end.astimezone(UTC).astimezone(zone)


@dataclass(frozen=True)
class ScopeSpec:
    scope: str
    subject: str
    unit: str
    cap: Decimal
    period_start: datetime  # UTC
    resets_at: datetime  # aware, in the budget's zone

    @property
    def key(self) -> tuple:
        return (self.scope, self.subject, self.period_start, self.unit)


def _scopes(budget: Budget, *, user_key: str, at: datetime, zone: ZoneInfo | None = None) -> list[ScopeSpec]:
    zone = zone or zone_get(budget.time_zone)
    specs = []
    if budget.feature_monthly_cap is not None:
        start, end = period_bounds(scope=FEATURE_MONTH, zone=zone, at=at)
        specs.append(ScopeSpec(FEATURE_MONTH, "", budget.feature_monthly_unit, budget.feature_monthly_cap, start, end))
    if budget.user_daily_cap is not None and user_key:
        start, end = period_bounds(scope=USER_DAY, zone=zone, at=at)
        specs.append(ScopeSpec(USER_DAY, user_key, budget.user_daily_unit, budget.user_daily_cap, start, end))
    return specs


def _usage_filter(feature_id: int, specs: list[ScopeSpec]) -> Q:
    q = Q(pk__in=[])
    for s in specs:
        q |= Q(feature_id=feature_id, scope=s.scope, subject=s.subject, period_start=s.period_start, unit=s.unit)
    return q


def _amount(unit: str, *, usd: Decimal, tokens: int) -> Decimal:
    return usd if unit == USD else Decimal(tokens)


def _percent(spent: Decimal, cap: Decimal) -> Decimal:
    if cap <= 0:
        return Decimal(100)
    return (spent * 100 / cap).quantize(Decimal("0.1"))


# --- configuration ---------------------------------------------------------------------------

def _as_cap(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        cap = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed(f"{name} must be a number", details={name: ["Enter a number."]}) from None
    if not cap.is_finite() or cap <= 0:
        raise ValidationFailed(f"{name} must be positive", details={name: ["Must be greater than zero."]})
    if cap.as_tuple().exponent < -6 or cap >= Decimal(10) ** 10:
        raise ValidationFailed(f"{name} has too many digits", details={name: ["At most 10 digits and 6 decimals."]})
    return cap


def _budget_snapshot(budget: Budget | None) -> dict | None:
    if budget is None:
        return None
    return {
        "max_tokens_per_request": budget.max_tokens_per_request,
        "user_daily_cap": None if budget.user_daily_cap is None else str(budget.user_daily_cap),
        "user_daily_unit": budget.user_daily_unit,
        "feature_monthly_cap": None if budget.feature_monthly_cap is None else str(budget.feature_monthly_cap),
        "feature_monthly_unit": budget.feature_monthly_unit,
        "time_zone": budget.time_zone,
        "webhook_url": "(set)" if budget.webhook_url else "",  # the URL is a secret: never in the audit log
    }


def _exhausted_until(budget: Budget, *, now: datetime) -> datetime | None:
    """End of the current month when the feature-month cap is reached, else None."""
    specs = [s for s in _scopes(budget, user_key="", at=now) if s.scope == FEATURE_MONTH]
    if not specs:
        return None
    spec = specs[0]
    spent = (BudgetUsage.objects.filter(_usage_filter(budget.feature_id, specs))
             .values_list("spent", flat=True).first())
    return spec.resets_at if spent is not None and spent >= spec.cap else None


def budget_set(
    *,
    actor,
    feature: Feature,
    max_tokens_per_request: int | None = None,
    user_daily_cap: Decimal | str | None = None,
    user_daily_unit: str = "usd",
    feature_monthly_cap: Decimal | str | None = None,
    feature_monthly_unit: str = "usd",
    time_zone: str = "UTC",
    webhook_url: str = "",
) -> Budget:
    """Create or replace a feature's budget (audited). Caps left None are not enforced."""
    roles.require(actor, "budget.manage")
    errors: dict[str, list[str]] = {}
    if max_tokens_per_request is not None:
        try:
            max_tokens_per_request = int(max_tokens_per_request)
        except (TypeError, ValueError):
            errors["max_tokens_per_request"] = ["Enter a whole number."]
        else:
            if max_tokens_per_request <= 0 or max_tokens_per_request > 2_000_000_000:
                errors["max_tokens_per_request"] = ["Must be between 1 and 2,000,000,000."]
    for name, unit in (("user_daily_unit", user_daily_unit), ("feature_monthly_unit", feature_monthly_unit)):
        if unit not in Budget.Unit.values:
            errors[name] = [f"Must be one of {', '.join(Budget.Unit.values)}."]
    caps = {}
    for name, value in (("user_daily_cap", user_daily_cap), ("feature_monthly_cap", feature_monthly_cap)):
        try:
            caps[name] = _as_cap(value, name)
        except ValidationFailed as exc:
            errors.update(exc.details)
    try:
        zone_get(time_zone)
    except ValidationFailed as exc:
        errors.update(exc.details)
    webhook_url = (webhook_url or "").strip()
    if webhook_url:
        try:
            URLValidator(schemes=["http", "https"])(webhook_url)
        except DjangoValidationError:
            errors["webhook_url"] = ["Enter a valid http(s) URL."]
        else:
            # Names are resolved when a notification is sent; an address or localhost is known now.
            host = urlsplit(webhook_url).hostname or ""
            if _is_address(host) or host == "localhost":
                refusal = webhook_target_refusal(webhook_url)
                if refusal:
                    errors["webhook_url"] = [refusal]
    if errors:
        raise ValidationFailed("The budget is invalid; see details.", code="invalid_budget", details=errors)

    now = timezone.now()
    with transaction.atomic(durable=True):
        # Row lock: two people saving the budget at once serialise, so the audit's "before"
        # is exactly what the second one replaced.
        budget = Budget.objects.select_for_update().filter(feature=feature).first()
        before = _budget_snapshot(budget)
        served_before = (budget.max_tokens_per_request, budget.exhausted_until is not None
                         and budget.exhausted_until > now) if budget else (None, False)
        budget = budget or Budget(feature=feature)
        budget.max_tokens_per_request = max_tokens_per_request
        budget.user_daily_cap = caps["user_daily_cap"]
        budget.user_daily_unit = user_daily_unit
        budget.feature_monthly_cap = caps["feature_monthly_cap"]
        budget.feature_monthly_unit = feature_monthly_unit
        budget.time_zone = time_zone
        budget.webhook_url = webhook_url
        budget.exhausted_until = _exhausted_until(budget, now=now)
        budget.save()
        audit_event_record(actor=actor, action="budget.set", object_type="budget", object_key=feature.key,
                           before=before, after=_budget_snapshot(budget))
        served_after = (budget.max_tokens_per_request, budget.exhausted_until is not None)
        if served_after != served_before:
            budget_served_changed.send(sender=Budget, feature_ids=[feature.id])
    logger.info("budget.set", extra={"feature": feature.key})
    return budget


# --- reads -------------------------------------------------------------------------------------

def budget_get(*, feature: Feature) -> Budget | None:
    return Budget.objects.filter(feature=feature).first()


def budget_status(*, feature: Feature, user_key: str | None = None, now: datetime | None = None) -> dict:
    """Per scope: cap, unit, spent, reserved, remaining, percent, period_start, resets_at
    (both aware, in the budget's zone). The user scope appears only with a `user_key`."""
    now = now or timezone.now()
    budget = budget_get(feature=feature)
    if budget is None:
        return {"configured": False, "time_zone": "UTC", "max_tokens_per_request": None,
                "exhausted": False, "scopes": {}}
    zone = zone_get(budget.time_zone)
    specs = _scopes(budget, user_key=user_key or "", at=now, zone=zone)
    rows = {(u.scope, u.subject, u.period_start, u.unit): u
            for u in BudgetUsage.objects.filter(_usage_filter(feature.id, specs))}
    scopes = {}
    for spec in specs:
        usage = rows.get(spec.key)
        spent = usage.spent if usage else ZERO
        reserved = usage.reserved if usage else ZERO
        scopes[spec.scope] = {
            "cap": spec.cap, "unit": spec.unit, "subject": spec.subject, "spent": spent, "reserved": reserved,
            "remaining": max(spec.cap - spent - reserved, ZERO), "percent": _percent(spent, spec.cap),
            "period_start": spec.period_start.astimezone(zone), "resets_at": spec.resets_at,
        }
    return {
        "configured": True, "time_zone": budget.time_zone,
        "max_tokens_per_request": budget.max_tokens_per_request,
        "exhausted": budget.exhausted_until is not None and budget.exhausted_until > now,
        "user_daily_cap": budget.user_daily_cap, "user_daily_unit": budget.user_daily_unit,
        "scopes": scopes,
    }


# --- check and reserve -----------------------------------------------------------------------

@dataclass
class BudgetDecision:
    allowed: bool
    reason: str
    reservation_id: int | None = None
    remaining: dict[str, dict] = field(default_factory=dict)
    resets_at: datetime | None = None


def _ensure_usages(feature_id: int, specs: list[ScopeSpec]) -> None:
    # Race: two first requests of a period create the same row; the unique constraint keeps
    # one and ignore_conflicts makes the loser carry on to lock the winner's row.
    BudgetUsage.objects.bulk_create(
        [BudgetUsage(feature_id=feature_id, scope=s.scope, subject=s.subject, period_start=s.period_start,
                     unit=s.unit) for s in sorted(specs, key=lambda s: s.key)],  # the order settle inserts in
        ignore_conflicts=True,
    )


@dataclass(frozen=True)
class AlertCandidate:
    """A usage row at or over at least one threshold: `keys` maps every threshold to its
    dedupe key, `crossed` is the highest threshold reached."""

    feature: Feature
    spec: ScopeSpec
    spent: Decimal
    crossed: int
    keys: dict[int, str]


def _alert_candidate(feature: Feature, spec: ScopeSpec, spent: Decimal) -> list[AlertCandidate]:
    percent = _percent(spent, spec.cap)
    crossed = [t for t in THRESHOLDS if percent >= t]
    if not crossed:
        return []
    local_start = spec.period_start.astimezone(spec.resets_at.tzinfo)
    prefix = f"budget:{feature.key}:{spec.scope}:{spec.subject}:{local_start:%Y-%m-%d}"
    keys = {t: dedupe_key_fit(f"{prefix}:{t}") for t in THRESHOLDS}
    return [AlertCandidate(feature, spec, spent, max(crossed), keys)]


def _alerts_fire(candidates: list[AlertCandidate]) -> int:
    """Open each scope's highest crossed threshold unless it (or a higher one) already
    fired this period: a jump from 40 % to 105 % sends one "reached" alert, not three. A
    new, higher alert supersedes the lower open ones of the same period (resolved without
    notification; their keys stay taken, so they never fire again this period). One query
    finds what exists; alert_open itself is safe if another process wins the race."""
    if not candidates:
        return 0
    existing = set(Alert.objects.filter(dedupe_key__in=[k for c in candidates for k in c.keys.values()])
                   .values_list("dedupe_key", flat=True))
    opened = 0
    now = timezone.now()
    for c in candidates:
        if any(c.keys[t] in existing for t in THRESHOLDS if t >= c.crossed):
            continue
        spec, spent, threshold = c.spec, c.spent, c.crossed
        who = "per-user daily" if spec.scope == USER_DAY else "monthly"
        subject = f" for user {spec.subject[:12]}" if spec.subject else ""
        verb = "reached" if threshold >= 100 else f"at {threshold} %"
        amounts = (f"${spent:,.2f} of ${spec.cap:,.2f}" if spec.unit == USD
                   else f"{int(spent):,} of {int(spec.cap):,} tokens")
        title = f"{c.feature.key}: {who} budget {verb}{subject} ({amounts})"
        figures = {"scope": spec.scope, "subject": spec.subject, "threshold": threshold, "unit": spec.unit,
                   "cap": str(spec.cap), "spent": str(spent), "percent": str(_percent(spent, spec.cap)),
                   "period_start": spec.period_start.astimezone(spec.resets_at.tzinfo).isoformat(),
                   "resets_at": spec.resets_at.isoformat()}
        key = c.keys[threshold]
        if alert_open(kind=Alert.Kind.BUDGET, feature=c.feature, dedupe_key=key, title=title, figures=figures):
            opened += 1
            existing.add(key)
            lower = [c.keys[t] for t in THRESHOLDS if t < threshold]
            Alert.objects.filter(dedupe_key__in=lower, resolved_at=None).update(resolved_at=now)
    return opened


def budget_alerts_evaluate(*, feature: Feature, now: datetime | None = None) -> int:
    """Open the feature-month alert its current spending has crossed, if not yet sent this
    period (settlement does this as events arrive; this is for usage written otherwise,
    such as the demo seed). Returns how many alerts opened."""
    budget = Budget.objects.filter(feature=feature).first()
    if budget is None:
        return 0
    now = now or timezone.now()
    candidates = []
    for spec in _scopes(budget, user_key="", at=now):
        usage = BudgetUsage.objects.filter(_usage_filter(feature.id, [spec])).first()
        if usage is not None:
            candidates += _alert_candidate(feature, spec, usage.spent)
    return _alerts_fire(candidates)


def budget_check(
    *,
    feature: Feature,
    user_key: str = "",
    estimated_cost_usd: Decimal | None = None,
    estimated_tokens: int | None = None,
    max_tokens: int | None = None,
    now: datetime | None = None,
) -> BudgetDecision:
    """Allow or deny one call before it is made; when allowed, reserve its estimate.

    A scope whose unit the caller gave no estimate for counts the call as 0: it is then
    denied only once the cap is already reached."""
    now = now or timezone.now()
    usd = estimated_cost_usd if estimated_cost_usd is not None else ZERO
    tokens = estimated_tokens or 0
    budget = budget_get(feature=feature)
    if budget is None:
        return BudgetDecision(True, "no_budget")
    cap = budget.max_tokens_per_request
    asked = max(estimated_tokens or 0, max_tokens or 0)
    if cap is not None and asked > cap:
        return BudgetDecision(False, "max_tokens_per_request",
                              remaining={"request": {"cap": Decimal(cap), "unit": TOKENS, "remaining": Decimal(cap)}})
    specs = _scopes(budget, user_key=user_key, at=now)
    if not specs:
        return BudgetDecision(True, "ok")
    with transaction.atomic(durable=True):
        _ensure_usages(feature.id, specs)
        # Row locks: concurrent checks of the same user-day / feature-month serialise here,
        # so two callers can never both see the same headroom and overspend. Taken in pk
        # order, as settle and expire do, so they cannot deadlock.
        locked = {(u.scope, u.subject, u.period_start, u.unit): u for u in
                  BudgetUsage.objects.select_for_update().filter(_usage_filter(feature.id, specs)).order_by("pk")}
        remaining: dict[str, dict] = {}
        denied: ScopeSpec | None = None
        candidates = []
        for spec in specs:
            usage = locked[spec.key]
            amount = _amount(spec.unit, usd=usd, tokens=tokens)
            committed = usage.spent + usage.reserved
            fits = committed + amount <= spec.cap and (amount > 0 or committed < spec.cap)
            if not fits and denied is None:
                denied = spec
            remaining[spec.scope] = {"cap": spec.cap, "unit": spec.unit,
                                     "remaining": max(spec.cap - committed, ZERO), "resets_at": spec.resets_at}
            candidates += _alert_candidate(feature, spec, usage.spent)
        _alerts_fire(candidates)
        if denied is not None:
            reason = "user_daily_cap" if denied.scope == USER_DAY else "feature_monthly_cap"
            return BudgetDecision(False, reason, remaining=remaining, resets_at=denied.resets_at)
        units = {s.unit for s in specs}
        reservation = BudgetReservation.objects.create(
            feature=feature, user_key=user_key, amount=usd, tokens=tokens,
            unit=units.pop() if len(units) == 1 else "both", expires_at=now + RESERVATION_TTL,
        )
        for spec in specs:
            usage = locked[spec.key]
            amount = _amount(spec.unit, usd=usd, tokens=tokens)
            usage.reserved += amount
            usage.save(update_fields=["reserved"])
            remaining[spec.scope]["remaining"] = max(remaining[spec.scope]["remaining"] - amount, ZERO)
        reservation.usages.set(locked.values())
    logger.info("budget.reserved", extra={"feature": feature.key, "reservation_id": reservation.id})
    return BudgetDecision(True, "ok", reservation_id=reservation.id, remaining=remaining,
                          resets_at=min(s.resets_at for s in specs))


# --- settle and release ------------------------------------------------------------------------

def _release_amounts(reservations: list[BudgetReservation]) -> tuple[dict[int, Decimal], set[int]]:
    """Per usage id, the reserved amount the given reservations hold (one query)."""
    through = BudgetReservation.usages.through
    links = list(through.objects.filter(budgetreservation_id__in=[r.pk for r in reservations])
                 .values_list("budgetreservation_id", "budgetusage_id", "budgetusage__unit"))
    by_id = {r.pk: r for r in reservations}
    deltas: dict[int, Decimal] = {}
    for reservation_id, usage_id, unit in links:
        r = by_id[reservation_id]
        deltas[usage_id] = deltas.get(usage_id, ZERO) + _amount(unit, usd=r.amount, tokens=r.tokens)
    return deltas, set(deltas)


def budget_events_settle(*, events: list[CallEvent]) -> None:
    """Add newly inserted events to their budgets' spent counters and release the
    reservations they used. Called by ingest inside its transaction; a few queries per
    batch whatever its size."""
    if not events:
        return
    budgets = {b.feature_id: b for b in
               Budget.objects.filter(feature_id__in={e.feature_id for e in events}).select_related("feature")}
    events = [e for e in events if e.feature_id in budgets]
    if not events:
        return
    now = timezone.now()
    zones = {fid: zone_get(b.time_zone) for fid, b in budgets.items()}
    with transaction.atomic():
        # 1. Reservations: by request_id == reservation id (same feature and user), else, for
        #    an event with no request_id at all, the oldest unsettled one of the same feature
        #    and user. An event naming another id (a settled reservation, the app's own id)
        #    or reporting a refused call (budget_blocked: no reservation was made) takes none:
        #    releasing someone else's hold would let the next check overspend.
        #    Row-locked so the expiry task cannot release the same reservation twice.
        wanted_ids = {int(e.request_id) for e in events if e.request_id.isdigit() and len(e.request_id) < 19}
        pairs_q = Q(pk__in=[])
        for fid in budgets:
            keys = {e.user_key for e in events if e.feature_id == fid}
            pairs_q |= Q(feature_id=fid, user_key__in=keys)
        candidates = list(BudgetReservation.objects.select_for_update()
                          .filter(Q(pk__in=wanted_ids) | pairs_q, settled_at=None).order_by("created_at", "pk"))
        by_pk = {r.pk: r for r in candidates}
        taken: list[BudgetReservation] = []
        taken_pks: set[int] = set()
        fallback = []
        for e in events:
            if not e.request_id:
                if e.outcome != Outcome.BUDGET_BLOCKED:
                    fallback.append(e)
                continue
            r = by_pk.get(int(e.request_id)) if e.request_id.isdigit() and len(e.request_id) < 19 else None
            if (r is not None and r.feature_id == e.feature_id and r.user_key == e.user_key
                    and r.pk not in taken_pks):
                taken.append(r)
                taken_pks.add(r.pk)
        for e in fallback:
            r = next((r for r in candidates if r.pk not in taken_pks and r.feature_id == e.feature_id
                      and r.user_key == e.user_key), None)
            if r is not None:
                taken.append(r)
                taken_pks.add(r.pk)
        release, release_ids = _release_amounts(taken) if taken else ({}, set())

        # 2. Spend per usage row, by the period each event occurred in.
        spend: dict[tuple, Decimal] = {}
        specs_by_key: dict[tuple, ScopeSpec] = {}
        for e in events:
            b = budgets[e.feature_id]
            usd = e.cost_usd or ZERO
            tokens = e.input_tokens + e.output_tokens  # cached tokens are part of input tokens
            for spec in _scopes(b, user_key=e.user_key, at=e.occurred_at, zone=zones[e.feature_id]):
                key = (e.feature_id, *spec.key)
                spend[key] = spend.get(key, ZERO) + _amount(spec.unit, usd=usd, tokens=tokens)
                specs_by_key[key] = spec
        # Sorted: two batches creating the same new rows (a new day, new users) in different
        # orders would each wait on the other's uncommitted row - a deadlock.
        BudgetUsage.objects.bulk_create(
            [BudgetUsage(feature_id=k[0], scope=k[1], subject=k[2], period_start=k[3], unit=k[4])
             for k in sorted(spend)],
            ignore_conflicts=True,
        )
        # Row locks (pk order, like budget_check): a concurrent check must see the new spend.
        usage_q = Q(pk__in=release_ids)
        for fid in {k[0] for k in spend}:
            keys = [k for k in spend if k[0] == fid]
            usage_q |= Q(feature_id=fid, subject__in={k[2] for k in keys}, period_start__in={k[3] for k in keys})
        usages = list(BudgetUsage.objects.select_for_update().filter(usage_q).order_by("pk"))
        changed = []
        alert_candidates = []
        exhausted: dict[int, datetime] = {}
        for u in usages:
            key = (u.feature_id, u.scope, u.subject, u.period_start, u.unit)
            delta, freed = spend.get(key, ZERO), release.get(u.pk, ZERO)
            if key not in spend and u.pk not in release:
                continue  # locked only because the filter is a superset
            u.spent += delta
            u.reserved = max(u.reserved - freed, ZERO)
            changed.append(u)
            spec = specs_by_key.get(key)
            if spec is None or delta <= 0 or spec.resets_at <= now:
                continue  # late events of a past period neither alert nor flip the config
            alert_candidates += _alert_candidate(budgets[u.feature_id].feature, spec, u.spent)
            if spec.scope == FEATURE_MONTH and u.spent >= spec.cap:
                exhausted[u.feature_id] = spec.resets_at
        BudgetUsage.objects.bulk_update(changed, ["spent", "reserved"])
        if taken:
            BudgetReservation.objects.filter(pk__in=taken_pks).update(settled_at=now)

        # 3. Alerts and the served "exhausted" state.
        _alerts_fire(alert_candidates)
        flipped = []
        for fid, until in exhausted.items():
            # Compare-and-set: only the transaction that flips it rebuilds the snapshot.
            if Budget.objects.filter(Q(exhausted_until=None) | Q(exhausted_until__lte=now), feature_id=fid) \
                    .update(exhausted_until=until):
                flipped.append(fid)
        if flipped:
            logger.info("budget.exhausted", extra={"feature_ids": flipped})
            for fid in flipped:  # the served config changes: audited like any other change
                audit_event_record(actor=None, action="budget.exhausted", object_type="budget",
                                   object_key=budgets[fid].feature.key,
                                   after={"exhausted_until": exhausted[fid].isoformat()},
                                   reason="monthly ceiling reached")
            budget_served_changed.send(sender=Budget, feature_ids=flipped)


def budget_reservations_expire(*, now: datetime | None = None) -> dict[str, int]:
    """Periodic housekeeping: release expired reservations, end exhaustion when its month is
    over, and resolve budget alerts of periods that have ended."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        # SKIP LOCKED: a reservation being settled right now is left to the settling ingest.
        expired = list(BudgetReservation.objects.select_for_update(skip_locked=True)
                       .filter(settled_at=None, expires_at__lte=now).order_by("pk")[:5000])
        if expired:
            release, usage_ids = _release_amounts(expired)
            usages = list(BudgetUsage.objects.select_for_update().filter(pk__in=usage_ids).order_by("pk"))
            for u in usages:
                u.reserved = max(u.reserved - release.get(u.pk, ZERO), ZERO)
            BudgetUsage.objects.bulk_update(usages, ["reserved"])
            BudgetReservation.objects.filter(pk__in=[r.pk for r in expired]).update(settled_at=now)
        renewed = list(Budget.objects.filter(exhausted_until__lte=now).values_list("feature_id", flat=True))
        if renewed:
            Budget.objects.filter(feature_id__in=renewed, exhausted_until__lte=now).update(exhausted_until=None)
            for key in Feature.objects.filter(pk__in=renewed).values_list("key", flat=True):
                audit_event_record(actor=None, action="budget.renewed", object_type="budget", object_key=key,
                                   after={"exhausted_until": None}, reason="a new budget month began")
            budget_served_changed.send(sender=Budget, feature_ids=renewed)
    resolved = 0
    for alert in alerts_open().filter(kind=Alert.Kind.BUDGET):
        resets_at = alert.figures.get("resets_at")
        if resets_at and datetime.fromisoformat(resets_at) <= now:
            resolved += alert_resolve(dedupe_key=alert.dedupe_key, figures={"reason": "period ended"})
    return {"released": len(expired), "renewed": len(renewed), "resolved": resolved}


def budget_served_state(*, feature_ids: list[int], now: datetime | None = None) -> dict[int, dict]:
    """What the config snapshot serves per feature, in one query (used by apps.rollouts)."""
    now = now or timezone.now()
    state = {fid: {"max_tokens_per_request": None, "exhausted": False} for fid in feature_ids}
    for fid, cap, until in Budget.objects.filter(feature_id__in=feature_ids).values_list(
            "feature_id", "max_tokens_per_request", "exhausted_until"):
        state[fid] = {"max_tokens_per_request": cap, "exhausted": until is not None and until > now}
    return state
