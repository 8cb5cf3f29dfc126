"""Per-minute and per-hour rollups of call events, and retention of raw events.

`rollup_pending` folds call events that are not rolled up yet into CallRollup rows (one per
minute x environment x feature x prompt version x arm x model): counts, tokens, cost, latency
sum and a mergeable latency histogram (apps.metrics.histogram), and, in the same transaction
and the same way, into CallRollupHour rows (the same key per UTC hour), so an hour row is
always the sum of its minute rows. It is idempotent (an event is marked rolled_up in the same
transaction that adds it to both levels) and safe with two workers at once: on Postgres the
events are claimed with `FOR UPDATE SKIP LOCKED`, and the rollup rows they add to are created
insert-or-ignore and then row-locked in one order (all minute rows by id, then all hour rows
by id), so two workers never lose an addition or deadlock. Dashboards read rollups, never raw
events (apps.metrics.selectors).

`rollup_hours_add` adds CallRollup rows written some other way (the demo seed, the dashboard
benchmark, tests) into their hour rows through the same code.

`call_events_purge` deletes raw events past the retention window; rollups are kept."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from apps.metrics import histogram
from apps.metrics.ingest import retention_days
from apps.metrics.models import FAILED_OUTCOMES, CallEvent, CallRollup, CallRollupHour, Outcome

_EVENT_FIELDS = ("id", "occurred_at", "environment_id", "feature_id", "prompt_version", "arm", "model",
                 "outcome", "cache_hit", "input_tokens", "cached_tokens", "output_tokens", "cost_usd",
                 "latency_ms")
_COUNTERS = ("calls", "errors", "blocked", "budget_blocked", "cache_hits", "input_tokens", "cached_tokens",
             "output_tokens", "latency_sum_ms")
_FAILED = frozenset(o.value for o in FAILED_OUTCOMES)

RollupKey = tuple[dt.datetime, int, int, str, str, str]


class _Sums:
    __slots__ = ("counts", "cost", "hist")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.cost = Decimal(0)
        self.hist = histogram.empty()

    def add(self, counts: dict[str, int], cost, hist: list[int]) -> None:
        for name in _COUNTERS:
            self.counts[name] += counts[name]
        self.cost += Decimal(cost)
        self.hist = histogram.merge([self.hist, hist or []])


def _minute(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(second=0, microsecond=0)


def _hour(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _by_hour(groups: dict[RollupKey, _Sums]) -> dict[RollupKey, _Sums]:
    """The per-minute sums added up per UTC hour (same key otherwise)."""
    hours: dict[RollupKey, _Sums] = defaultdict(_Sums)
    for key, sums in groups.items():
        hours[(_hour(key[0]), *key[1:])].add(sums.counts, sums.cost, sums.hist)
    return hours


def _fold(rows) -> dict[RollupKey, _Sums]:
    groups: dict[RollupKey, _Sums] = defaultdict(_Sums)
    for (_, occurred_at, env_id, feature_id, version, arm, model, outcome, cache_hit, inp, cached, out, cost,
         latency) in rows:
        sums = groups[(_minute(occurred_at), env_id, feature_id, version, arm, model)]
        c = sums.counts
        c["calls"] += 1
        c["errors"] += outcome in _FAILED
        c["blocked"] += outcome == Outcome.BLOCKED
        c["budget_blocked"] += outcome == Outcome.BUDGET_BLOCKED
        c["cache_hits"] += bool(cache_hit)
        c["input_tokens"] += inp
        c["cached_tokens"] += cached
        c["output_tokens"] += out
        c["latency_sum_ms"] += latency
        if cost is not None:
            sums.cost += cost
        histogram.add(sums.hist, latency)
    return groups


def _add_into(model: type[CallRollup] | type[CallRollupHour], period: str, groups: dict[RollupKey, _Sums]) -> None:
    """Add `groups` (key -> sums; key[0] is the minute or the hour, as `period` names it) into
    `model`'s rows. Must run inside the caller's transaction."""
    keys = sorted(groups)
    # Make sure every target row exists (insert-or-ignore: a concurrent worker may create
    # the same one), in key order so concurrent inserts wait on each other, not deadlock.
    model.objects.bulk_create(
        [model(**{period: k[0]}, environment_id=k[1], feature_id=k[2], prompt_version=k[3], arm=k[4], model=k[5],
               latency_histogram=histogram.empty()) for k in keys],
        ignore_conflicts=True, batch_size=500,
    )
    # Read-modify-write of the counters: lock the rows (in id order, the same in every
    # worker) so a second worker adding to the same period cannot overwrite this addition.
    candidates = (model.objects.select_for_update()
                  .filter(**{f"{period}__in": {k[0] for k in keys}}, feature_id__in={k[2] for k in keys},
                          environment_id__in={k[1] for k in keys})
                  .order_by("id"))
    wanted = set(keys)
    changed = []
    for row in candidates:
        key = (getattr(row, period), row.environment_id, row.feature_id, row.prompt_version, row.arm, row.model)
        if key not in wanted:
            continue
        sums = groups[key]
        for name in _COUNTERS:
            setattr(row, name, getattr(row, name) + sums.counts[name])
        row.cost_usd = Decimal(row.cost_usd) + sums.cost
        row.latency_histogram = histogram.merge([row.latency_histogram or [], sums.hist])
        changed.append(row)
    if len(changed) != len(keys):  # a bug, not a race: the rows were just ensured in this transaction
        raise RuntimeError(f"{model.__name__} rows missing: expected {len(keys)}, found {len(changed)}")
    model.objects.bulk_update(changed, [*_COUNTERS, "cost_usd", "latency_histogram"], batch_size=500)


def rollup_pending(*, limit: int = 5000) -> int:
    """Fold up to `limit` pending call events (oldest first) into the per-minute and per-hour
    rollups in one transaction; returns how many events were rolled up (0 when nothing was
    pending)."""
    with transaction.atomic(durable=True):
        pending = CallEvent.objects.filter(rolled_up=False).order_by("id")
        if connection.vendor == "postgresql":
            # Two workers at once: each claims events the other has not locked, none twice.
            pending = pending.select_for_update(skip_locked=True)
        rows = list(pending.values_list(*_EVENT_FIELDS)[:limit])
        if not rows:
            return 0
        groups = _fold(rows)
        # Minute rows first, then hour rows, in every worker: one lock order, no deadlock.
        _add_into(CallRollup, "minute", groups)
        _add_into(CallRollupHour, "hour", _by_hour(groups))
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), 1000):
            CallEvent.objects.filter(id__in=ids[start:start + 1000]).update(rolled_up=True)
    return len(rows)


def rollup_hours_add(*, minute_rows: Iterable[CallRollup]) -> int:
    """Add per-minute rollup rows that were written directly (not by `rollup_pending`: the
    demo seed, the dashboard benchmark) into their CallRollupHour rows, exactly as
    `rollup_pending` does; returns how many hour rows were touched. Call it once per minute
    row, in the transaction that wrote it."""
    groups: dict[RollupKey, _Sums] = defaultdict(_Sums)
    for row in minute_rows:
        key = (_minute(row.minute), row.environment_id, row.feature_id, row.prompt_version, row.arm, row.model)
        groups[key].add({name: getattr(row, name) for name in _COUNTERS}, row.cost_usd, row.latency_histogram)
    if not groups:
        return 0
    hours = _by_hour(groups)
    with transaction.atomic():
        _add_into(CallRollupHour, "hour", hours)
    return len(hours)


def rollup_all_pending(*, limit: int = 5000, max_rounds: int = 100) -> int:
    """Run `rollup_pending` until nothing is pending (or `max_rounds`); returns the total."""
    total = 0
    for _ in range(max_rounds):
        done = rollup_pending(limit=limit)
        total += done
        if done < limit:
            break
    return total


def call_events_purge(*, older_than_days: int | None = None, chunk: int = 10_000) -> int:
    """Delete raw call events that occurred more than `older_than_days` (default
    SHIPWAY_EVENT_RETENTION_DAYS) ago; returns how many. Rollups are kept. Events not rolled up
    yet are kept too (a backlog is rolled up first, never lost), in chunks so no transaction
    holds a long lock."""
    days = retention_days() if older_than_days is None else older_than_days
    cutoff = timezone.now() - dt.timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(CallEvent.objects.filter(occurred_at__lt=cutoff, rolled_up=True)
                       .order_by("id").values_list("id", flat=True)[:chunk])
            if not ids:
                return deleted
            deleted += CallEvent.objects.filter(id__in=ids).delete()[0]
