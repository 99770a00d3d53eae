"""Backoff: full jitter inside [0, min(cap, base * factor**n)], never below Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tice_agent.sender import MAX_RETRY_AFTER_S, Backoff, parse_retry_after

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_ceiling_grows_exponentially_then_caps() -> None:
    b = Backoff(base_s=5, factor=2, cap_s=900)
    assert [b.ceiling(n) for n in range(9)] == [5, 10, 20, 40, 80, 160, 320, 640, 900]
    assert b.ceiling(10_000) == 900  # no overflow


@pytest.mark.parametrize("attempt", [0, 1, 3, 7, 8, 50])
def test_full_jitter_stays_in_range_and_spreads(attempt: int) -> None:
    b = Backoff(base_s=5, factor=2, cap_s=900)
    rng = random.Random(attempt)
    delays = [b.delay(attempt, rng) for _ in range(2000)]
    top = min(900, 5 * 2**attempt)
    assert all(0 <= d <= top for d in delays)
    # Full jitter, not "base plus a little": the whole range is used.
    assert min(delays) < top * 0.05 and max(delays) > top * 0.95


@pytest.mark.parametrize("attempt", [0, 2, 9])
def test_never_below_retry_after(attempt: int) -> None:
    b = Backoff(base_s=5, factor=2, cap_s=900)
    rng = random.Random(1)
    assert all(b.delay(attempt, rng, retry_after=120) >= 120 for _ in range(500))
    # Retry-After above the cap still wins: the server knows best when it can take us.
    assert b.delay(0, rng, retry_after=3600) == 3600


def test_jitter_extremes_with_a_scripted_rng() -> None:
    class Fixed(random.Random):
        def __init__(self, x: float) -> None:
            super().__init__()
            self.x = x

        def uniform(self, a: float, b: float) -> float:
            return a + (b - a) * self.x

    b = Backoff(base_s=5, factor=2, cap_s=900)
    assert b.delay(3, Fixed(0.0)) == 0.0
    assert b.delay(3, Fixed(1.0)) == 40.0
    assert b.delay(3, Fixed(0.0), retry_after=7) == 7.0
    assert b.delay(3, Fixed(1.0), retry_after=7) == 40.0


def test_retry_after_seconds() -> None:
    assert parse_retry_after("30", NOW) == 30.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    assert parse_retry_after("999999999", NOW) == MAX_RETRY_AFTER_S


def test_retry_after_http_date() -> None:
    header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)  # "Mon, 02 Mar 2026 09:01:30 GMT"
    assert header.endswith("GMT")
    assert parse_retry_after(header, NOW) == 90.0
    past = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2026"])
def test_retry_after_unreadable_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None
