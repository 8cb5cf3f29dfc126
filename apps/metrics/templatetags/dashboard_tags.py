"""Number formatting for the dashboards: rates as percents, big counts compacted."""
from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def percentage(value: float | Decimal | None, digits: int = 2) -> str:
    """0.01234 -> "1.23 %"; None (no calls) -> "–"."""
    if value is None or value == "":
        return "–"
    return f"{float(value) * 100:.{int(digits)}f} %"


@register.filter
def compact(value: int | float | None) -> str:
    """1234 -> "1,234"; 12_345_678 -> "12.3 M"."""
    if value is None:
        return "–"
    value = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M")):
        if abs(value) >= limit:
            return f"{value / limit:.1f} {suffix}"
    return f"{value:,.0f}"


@register.filter
def usd(value: Decimal | float | None) -> str:
    """Money for display: cents from a dollar up, four decimals below ($0.0021)."""
    if value is None:
        return "–"
    value = Decimal(value)
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


@register.filter
def plain_decimal(value: Decimal | None) -> str:
    """A stored decimal without its padding zeros: 0.800000 -> 0.8, 25.000000 -> 25."""
    if value is None:
        return ""
    text = f"{Decimal(value):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
