"""Mergeable latency histograms: a list of call counts per bucket of `BOUNDS_MS`, so a
rollup row stores one and any window's p50 / p95 / p99 comes from adding them up.

Bucket i counts latencies in (BOUNDS_MS[i-1], BOUNDS_MS[i]]; the last bucket counts
everything above the last bound. Bounds grow by about 10 % a step, so a percentile read
from the histogram is within ~5 % of the exact one (it is interpolated inside its bucket)."""
from bisect import bisect_left
from collections.abc import Iterable


def _bounds() -> tuple[int, ...]:
    bounds, value = [], 1.0
    while value < 600_000:  # ten minutes: anything slower is "slower than that"
        rounded = int(round(value))
        if not bounds or rounded > bounds[-1]:
            bounds.append(rounded)
        value *= 1.1
    return tuple(bounds)


BOUNDS_MS: tuple[int, ...] = _bounds()
SIZE = len(BOUNDS_MS) + 1


def bucket_of(latency_ms: int) -> int:
    return bisect_left(BOUNDS_MS, latency_ms)


def empty() -> list[int]:
    return [0] * SIZE


def add(histogram: list[int], latency_ms: int, count: int = 1) -> list[int]:
    if len(histogram) < SIZE:
        histogram.extend([0] * (SIZE - len(histogram)))
    histogram[bucket_of(latency_ms)] += count
    return histogram


def merge(histograms: Iterable[list[int]]) -> list[int]:
    total = empty()
    for h in histograms:
        for i, n in enumerate(h):
            if n:
                total[i] += n
    return total


def percentile(histogram: list[int], q: float) -> float | None:
    """The q-th quantile (0 < q <= 1) in ms, linearly interpolated inside its bucket; None
    for an empty histogram."""
    count = sum(histogram)
    if count == 0:
        return None
    rank = q * count
    seen = 0
    for i, n in enumerate(histogram):
        if n and seen + n >= rank:
            low = BOUNDS_MS[i - 1] if i > 0 else 0
            high = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1]
            return low + (high - low) * ((rank - seen) / n)
        seen += n
    return float(BOUNDS_MS[-1])
