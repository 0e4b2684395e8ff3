"""Per-token request budgets (token bucket), answered with 429 and Retry-After.

Kept in this process's memory: with N `camreg serve` processes behind a balancer a token's
effective budget is N times its setting, which is the usual trade for not adding a shared
store to every request. The table is bounded; idle buckets are dropped first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

MAX_BUCKETS = 100_000


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, per_minute: int, now: float | None = None) -> float:
        """0 if a request may pass now, else the seconds until one may."""
        t = time.monotonic() if now is None else now
        rate = per_minute / 60.0
        tokens, last = self._buckets.pop(key, (float(per_minute), t))
        tokens = min(float(per_minute), tokens + (t - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, t)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, t)
            wait = (1.0 - tokens) / rate
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
