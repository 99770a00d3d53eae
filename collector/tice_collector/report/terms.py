"""School terms: the runs of school days between breaks. Pure functions.

A break is a run of at least BREAK_DAYS days without a school day. Weekends, public holidays
and the Friday after Ascension leave at most 5 such days in a row (a four-day school: Tuesday,
then Monday); the shortest school break (two weeks, from a Saturday) leaves 15. So breaks come
from the calendar as it is (bundled holiday data, imported calendars, overrides), with no list
of term dates to keep. A closure of a whole week (a strike) also ends a term.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

BREAK_DAYS = 7


def terms(school_days: Iterable[date]) -> list[tuple[date, date]]:
    """The terms of these school days as (first school day, last school day), in order."""
    days = sorted(set(school_days))
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and (day - runs[-1][1]).days - 1 < BREAK_DAYS:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def current_term(school_days: Iterable[date], today: date) -> tuple[date, date] | None:
    """The default period of a report made on `today`: completed school days only.

    The term `today` falls in, from its first school day to yesterday (or its last day, if
    earlier); during a break, or on a term's first day, the last term with a school day before
    today, whole. None when no school day comes before today.
    """
    past = [t for t in terms(school_days) if t[0] < today]
    if not past:
        return None
    first, last = past[-1]
    return first, min(last, today - timedelta(days=1))
