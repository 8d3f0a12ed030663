"""Retry delays: exponential back-off with "equal jitter", from tenacity's wait strategies.

``delay(failures, base, cap)`` is ``d/2 + uniform(0, d/2)`` with
``d = min(cap, base * 2 ** (failures - 1))``: it never waits less than half the
exponential delay (a receiver or upstream that is down is not hammered), and
many clients that failed together -- every webhook of a node when its network
came back, every follower of one upstream -- spread their retries over the
other half instead of retrying in lock-step.

The loops that use it (``sync.follower.watch_feed``, the webhook workers of
``platform.changes``) keep their own failure count: a webhook's survives a
restart in SQLite, so they cannot be tenacity-decorated functions; they ask
tenacity only for the wait. Pure: no I/O, no clock.
"""
from __future__ import annotations

from tenacity import RetryCallState, wait_exponential, wait_random_exponential

from federation.core.errors import InputError


def delay(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1 = the first)."""
    if type(failures) is not int or failures < 1 or not 0 < base <= cap:
        raise InputError(f"retry delay: failures {failures!r} must be >= 1 and 0 < base {base!r} <= cap {cap!r}")
    # Equal jitter as a sum of two tenacity strategies: half fixed, half random.
    wait = wait_exponential(multiplier=base / 2, max=cap / 2) + wait_random_exponential(multiplier=base / 2,
                                                                                       max=cap / 2)
    state = RetryCallState(None, None, (), {})
    state.attempt_number = min(failures, 64)  # 2 ** 63 s is past any cap; bigger only overflows
    return wait(state)
