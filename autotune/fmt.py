"""Numbers as tables and progress lines print them: plainly, never in exponent notation."""

from __future__ import annotations

import math


def fmt_number(value: float) -> str:
    """A figure for a table, plainly: ``12060``, never ``1.206e+04``, whatever its size
    (throughput up to 1e6 samples/s and beyond, latency from 1e5 ms down to 0.001 ms and
    below), with three significant digits at least."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value):
        return str(int(value))
    size = abs(value)
    if size >= 1000:
        return f"{value:.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.{min(15, max(4, 2 - math.floor(math.log10(size))))}f}"
