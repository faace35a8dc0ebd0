"""Budget arithmetic: budget days in a time zone, greediness shares, the request window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agenthub.api.metrics import RecentRequests
from agenthub.core.settings import Settings
from agenthub.db.models import Project
from agenthub.services.projects.budgets import allocation, day_start, day_starts


def test_a_budget_day_starts_at_local_midnight() -> None:
    berlin = Settings(budget_timezone="Europe/Berlin")
    # 23:30 UTC on 29 Nov is 00:30 on 30 Nov in Berlin: that day began at 23:00 UTC.
    now = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    assert day_start(berlin, now) == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    assert day_start(Settings(), now) == datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    days = day_starts(berlin, 3, now)
    assert [d.astimezone(UTC).isoformat() for d in days] == [
        "2026-11-27T23:00:00+00:00",
        "2026-11-28T23:00:00+00:00",
        "2026-11-29T23:00:00+00:00",
    ]


def test_share_is_greediness_over_the_active_total() -> None:
    settings = Settings(hub_daily_money=100, hub_daily_api_calls=1000, hub_daily_time_hours=10)
    project = Project(greediness=0.6, status="active", daily_money=None, daily_api_calls=None)
    a = allocation(settings, project, total=0.8, count=2)
    assert a.share == pytest.approx(0.75)
    assert a.money == pytest.approx(75)
    assert a.api_calls == 750
    assert a.time_hours == pytest.approx(7.5)
    own = Project(greediness=0.6, status="active", daily_money=5.0, daily_api_calls=None)
    assert allocation(settings, own, total=0.8, count=2).money == 5.0
    archived = Project(greediness=0.6, status="archived", daily_money=None)
    assert allocation(settings, archived, total=0.8, count=2).money == 0
    # Every active project at greediness 0: an even split rather than nothing for anyone.
    zero = Project(greediness=0.0, status="active", daily_money=None)
    assert allocation(settings, zero, total=0.0, count=4).money == 25


def test_recent_requests_forget_what_is_older_than_an_hour() -> None:
    now = [1_000_000.0]
    recent = RecentRequests(clock=lambda: now[0])
    recent.add(200, 0.010)
    recent.add(500, 0.030)
    stats = recent.last_hour()
    assert stats.requests == 2
    assert stats.average_ms == 20.0
    assert stats.error_rate_percent == 50.0
    now[0] += 30 * 60
    recent.add(200, 0.002)
    assert recent.last_hour().requests == 3
    now[0] += 31 * 60  # the first two are now over an hour old
    stats = recent.last_hour()
    assert stats.requests == 1
    assert stats.error_rate_percent == 0.0
