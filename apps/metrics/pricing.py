"""The model price table and the cost of one call.

Prices are USD per million tokens (input, cached input, output), each row in effect from its
`effective_from` date (UTC) until the next row for the same model. Cached tokens are part of
the input tokens, so a call is billed

    (input - cached) x input rate  +  cached x cached rate  +  output x output rate

Money is Decimal end to end; a computed cost is quantized to the 10 decimal places the
`CallEvent.cost_usd` column stores (rounded only for display beyond that)."""
from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.db import transaction

from apps.core import roles
from apps.core.errors import ValidationFailed
from apps.core.services import audit_event_record
from apps.metrics.models import ModelPrice

MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("1e-10")  # CallEvent.cost_usd has decimal_places=10
PRICE_QUANTUM = Decimal("1e-6")  # ModelPrice columns have decimal_places=6
PRICE_MAX = Decimal("999999")  # max_digits=12, decimal_places=6

# A few common models with their list prices (USD per million tokens: input, cached input,
# output). Plausible defaults so costs are not empty on a fresh install; edit them on
# /settings/prices/.
DEFAULT_PRICES: dict[str, tuple[str, str, str]] = {
    "gpt-4o": ("2.50", "1.25", "10.00"),
    "gpt-4o-mini": ("0.15", "0.075", "0.60"),
    "gpt-4.1": ("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
    "claude-sonnet": ("3.00", "0.30", "15.00"),
    "claude-haiku": ("0.80", "0.08", "4.00"),
    "gemini-1.5-flash": ("0.075", "0.01875", "0.30"),
}
DEFAULT_EFFECTIVE_FROM = dt.date(2024, 1, 1)


def _check_tokens(input_tokens: int, cached_tokens: int, output_tokens: int) -> None:
    if min(input_tokens, cached_tokens, output_tokens) < 0:
        raise ValidationFailed("token counts cannot be negative", code="negative_tokens")
    if cached_tokens > input_tokens:
        raise ValidationFailed(
            f"cached_tokens ({cached_tokens}) cannot exceed input_tokens ({input_tokens}): "
            "cached tokens are a part of the input",
            code="cached_exceeds_input",
        )


def cost_from_rates(
    *, input_per_million: Decimal, cached_input_per_million: Decimal, output_per_million: Decimal,
    input_tokens: int, cached_tokens: int, output_tokens: int,
) -> Decimal:
    """The cost of one call at the given rates; cached tokens are a part of the input tokens."""
    _check_tokens(input_tokens, cached_tokens, output_tokens)
    micro = ((input_tokens - cached_tokens) * input_per_million + cached_tokens * cached_input_per_million
             + output_tokens * output_per_million)
    return (micro / MILLION).quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Rates:
    effective_from: dt.date
    input_per_million: Decimal
    cached_input_per_million: Decimal
    output_per_million: Decimal


class PriceBook:
    """Every price row, loaded once (the table is small) so a batch of events is priced
    without a query per event."""

    def __init__(self, rows: list[ModelPrice] | None = None) -> None:
        self._by_model: dict[str, tuple[list[dt.date], list[Rates]]] = {}
        for row in sorted(rows or [], key=lambda r: (r.model, r.effective_from)):
            dates, rates = self._by_model.setdefault(row.model, ([], []))
            dates.append(row.effective_from)
            rates.append(Rates(row.effective_from, row.input_per_million, row.cached_input_per_million,
                               row.output_per_million))

    @classmethod
    def load(cls) -> PriceBook:
        rows = list(ModelPrice.objects.all())
        if not rows:  # first use on a fresh install: seed the defaults
            model_prices_seed_defaults()
            rows = list(ModelPrice.objects.all())
        return cls(rows)

    def rates(self, model: str, on: dt.date) -> Rates | None:
        """The price in effect on `on`: the row with the latest effective_from <= on."""
        found = self._by_model.get(model)
        if found is None:
            return None
        dates, rates = found
        i = bisect_right(dates, on)
        return rates[i - 1] if i else None

    def cost(self, model: str, input_tokens: int, cached_tokens: int, output_tokens: int,
             at: dt.datetime) -> Decimal | None:
        rates = self.rates(model, _utc_date(at))
        if rates is None:
            return None
        return cost_from_rates(
            input_per_million=rates.input_per_million, cached_input_per_million=rates.cached_input_per_million,
            output_per_million=rates.output_per_million, input_tokens=input_tokens, cached_tokens=cached_tokens,
            output_tokens=output_tokens,
        )


def _utc_date(at: dt.datetime) -> dt.date:
    if at.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return at.astimezone(dt.UTC).date()


def call_cost(model: str, input_tokens: int, cached_tokens: int, output_tokens: int,
              at: dt.datetime) -> Decimal | None:
    """USD cost of one call of `model` at time `at` with the price in effect on that (UTC)
    date, or None when the model has no price then. Raises ValidationFailed when cached
    tokens exceed input tokens."""
    _check_tokens(input_tokens, cached_tokens, output_tokens)
    row = (ModelPrice.objects.filter(model=model, effective_from__lte=_utc_date(at))
           .order_by("-effective_from").first())
    if row is None:
        return None
    return cost_from_rates(
        input_per_million=row.input_per_million, cached_input_per_million=row.cached_input_per_million,
        output_per_million=row.output_per_million, input_tokens=input_tokens, cached_tokens=cached_tokens,
        output_tokens=output_tokens,
    )


def _price(name: str, value: Decimal | str | int | float) -> Decimal:
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError, TypeError):
        raise ValidationFailed(f"{name} must be a decimal number", details={name: "not a number"}) from None
    if not price.is_finite() or price < 0 or price > PRICE_MAX:
        raise ValidationFailed(f"{name} must be between 0 and {PRICE_MAX}", details={name: "out of range"})
    if price != price.quantize(PRICE_QUANTUM):
        raise ValidationFailed(f"{name} has more than 6 decimal places", details={name: "too precise"})
    return price


def _state(row: ModelPrice) -> dict:
    return {"model": row.model, "effective_from": row.effective_from.isoformat(),
            "input_per_million": str(row.input_per_million),
            "cached_input_per_million": str(row.cached_input_per_million),
            "output_per_million": str(row.output_per_million)}


def model_price_set(
    *, actor, model: str, input_per_million: Decimal | str, cached_input_per_million: Decimal | str,
    output_per_million: Decimal | str, effective_from: dt.date,
) -> ModelPrice:
    """Set the price of `model` from `effective_from` on (creates the row, or replaces the
    one for that same day). Earlier rows stay: events before that day keep their price."""
    roles.require(actor, "price.manage")
    model = (model or "").strip()
    if not model or len(model) > 100:
        raise ValidationFailed("model must be 1 to 100 characters", details={"model": "required"})
    if not isinstance(effective_from, dt.date) or isinstance(effective_from, dt.datetime):
        raise ValidationFailed("effective_from must be a date", details={"effective_from": "not a date"})
    values = {
        "input_per_million": _price("input_per_million", input_per_million),
        "cached_input_per_million": _price("cached_input_per_million", cached_input_per_million),
        "output_per_million": _price("output_per_million", output_per_million),
    }
    with transaction.atomic(durable=True):
        # Lock the day's row (if any) so two admins saving the same day audit a true "before".
        row = ModelPrice.objects.select_for_update().filter(model=model, effective_from=effective_from).first()
        before = _state(row) if row is not None else None
        if row is None:
            row = ModelPrice.objects.create(model=model, effective_from=effective_from, **values)
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.save(update_fields=list(values))
        row.refresh_from_db()
        audit_event_record(actor=actor, action="model_price.set", object_type="model_price",
                           object_key=f"{model}@{effective_from.isoformat()}", before=before, after=_state(row))
    return row


def model_prices_seed_defaults() -> int:
    """Add DEFAULT_PRICES for the models that have no price yet; returns how many were added.
    Idempotent (seed_demo and the first price lookup both call it)."""
    existing = set(ModelPrice.objects.order_by().values_list("model", flat=True).distinct())
    added = 0
    for model, (inp, cached, out) in DEFAULT_PRICES.items():
        if model in existing:
            continue
        with transaction.atomic():
            _, created = ModelPrice.objects.get_or_create(
                model=model, effective_from=DEFAULT_EFFECTIVE_FROM,
                defaults={"input_per_million": Decimal(inp), "cached_input_per_million": Decimal(cached),
                          "output_per_million": Decimal(out)},
            )
            if created:
                added += 1
                audit_event_record(actor=None, action="model_price.seeded", object_type="model_price",
                                   object_key=f"{model}@{DEFAULT_EFFECTIVE_FROM.isoformat()}",
                                   after={"input_per_million": inp, "cached_input_per_million": cached,
                                          "output_per_million": out})
    return added

