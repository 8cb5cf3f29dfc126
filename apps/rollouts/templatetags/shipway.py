"""Template filters for Shipway pages."""
from django import template

from shipway.bucketing import basis_points_to_percent

register = template.Library()


@register.filter
def percent(basis_points: int) -> str:
    """Basis points as the percent text people type: 500 -> "5", 29 -> "0.29"."""
    return basis_points_to_percent(int(basis_points or 0))


@register.filter
def get(mapping, key):
    return mapping.get(key) if mapping else None
