from __future__ import annotations

from agenthub.core.ratelimit import Window, decide, standard_windows


def test_headers_describe_the_tightest_window() -> None:
    windows = standard_windows(100, 1000, 10000)
    now = 120.0  # two minutes into the epoch
    decision = decide(windows, [10, 995, 995], True, now)
    assert decision.allowed
    assert (decision.limit, decision.remaining) == (1000, 5)
    assert decision.reset_at == 3600
    assert decision.headers()["X-RateLimit-Remaining"] == "5"


def test_refusal_waits_for_the_exhausted_window() -> None:
    windows = [Window(60, 2), Window(3600, 100)]
    decision = decide(windows, [2, 50], False, 30.0)
    assert not decision.allowed
    assert (decision.limit, decision.remaining, decision.retry_after) == (2, 0, 30)


def test_window_boundaries() -> None:
    window = Window(60, 10)
    assert window.start(59.9) == 0
    assert window.start(60.0) == 60
    assert window.reset_at(61) == 120
