"""Prometheus metrics of one hub process (its own registry, so apps in one process don't mix)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agenthub_http_requests",
            "HTTP requests served, by route template, method and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "agenthub_http_request_duration_seconds",
            "Time to serve an HTTP request, by route template and method.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.recent = RecentRequests()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        self.recent.add(status, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class RequestStats:
    requests: int
    average_ms: float
    error_rate_percent: float


class RecentRequests:
    """Requests of the last hour in per-minute buckets (this process's), for ``/hub/status``.

    A ring of 60 minute buckets: adding is O(1) and the memory is fixed whatever the traffic.
    """

    MINUTES = 60

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._minute = [-1] * self.MINUTES
        self._count = [0] * self.MINUTES
        self._errors = [0] * self.MINUTES
        self._seconds = [0.0] * self.MINUTES

    def add(self, status: int, seconds: float) -> None:
        minute = int(self._clock() // 60)
        i = minute % self.MINUTES
        if self._minute[i] != minute:
            self._minute[i], self._count[i], self._errors[i], self._seconds[i] = minute, 0, 0, 0.0
        self._count[i] += 1
        self._seconds[i] += seconds
        if status >= 500:
            self._errors[i] += 1

    def last_hour(self) -> RequestStats:
        now = int(self._clock() // 60)
        count = errors = 0
        seconds = 0.0
        for i in range(self.MINUTES):
            if now - self._minute[i] < self.MINUTES:
                count += self._count[i]
                errors += self._errors[i]
                seconds += self._seconds[i]
        return RequestStats(
            requests=count,
            average_ms=round(seconds / count * 1000, 3) if count else 0.0,
            error_rate_percent=round(errors / count * 100, 3) if count else 0.0,
        )
