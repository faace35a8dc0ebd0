"""Backoff shared by the agent's loops (keepalive, poll, report)."""

from __future__ import annotations

import random

# Jitter spreads a fleet's retries so that agents that lost the hub together do not return together.
_rng = random.SystemRandom()


class Backoff:
    """Exponential backoff with jitter: 1 s, 2 s, 4 s ... up to ``cap``."""

    def __init__(self, cap: float, initial: float = 1.0) -> None:
        self.cap = max(cap, initial)
        self.initial = initial
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (grows with every call until ``reset()``)."""
        delay = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return _rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempt = 0
