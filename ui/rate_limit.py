"""Per-user rate limit on labels: one person (or one runaway script) cannot flood the label table.

Uses the ``limits`` package (moving window, in memory): ``N`` labels in any 60-second window per user.
Limits are per app process; several replicas behind one database each keep their own count (the
``limits`` package can keep them in Redis instead if that ever matters).

The key is the logged-in username; in open mode (no accounts) it is the browser/API session, so one
local user's tabs do not share a budget with a script.
"""

from __future__ import annotations

import logging
import math
import time

from recsys_core.errors import RecsysError

log = logging.getLogger(__name__)


class RateLimited(RecsysError, RuntimeError):
    """Too many labels in the window; the message says when to retry."""


class LabelRateLimit:
    def __init__(self, per_minute: int) -> None:
        if per_minute < 0:
            raise ValueError(f"feedback rate limit is {per_minute}; allowed: 0 (off) or a positive number per minute")
        self.per_minute = per_minute
        self._limiter = None
        if per_minute:
            from limits import RateLimitItemPerMinute, storage, strategies

            self._item = RateLimitItemPerMinute(per_minute)
            self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    @property
    def enabled(self) -> bool:
        return self._limiter is not None

    def check(self, key: str | None) -> None:
        """Count one label for ``key``; raises :class:`RateLimited` (nothing stored) when over the limit."""
        if self._limiter is None:
            return
        key = key or "anonymous"
        if self._limiter.hit(self._item, "labels", key):
            return
        stats = self._limiter.get_window_stats(self._item, "labels", key)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        log.warning("label rate limit hit by %r (%d per minute)", key[:64], self.per_minute)
        raise RateLimited(f"too many labels: at most {self.per_minute} per minute per person. Nothing was stored; "
                          f"try again in {wait} s (resending the same request_id is safe)")
