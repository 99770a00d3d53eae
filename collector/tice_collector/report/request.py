"""The arguments of a report, as the command and the API take them, checked once.

Every refusal is a ReportArgError whose message says what is wrong and what to give instead;
the command prints it and exits 2, the API answers 400 with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from tice_collector.uai import EXPECTED, parse_uai

Format = Literal["html", "csv", "json"]
Lang = Literal["fr", "en"]
FORMATS: tuple[Format, ...] = ("html", "csv", "json")
LANGS: tuple[Lang, ...] = ("fr", "en")
MAX_DAYS = 400  # a school year (early September to early July) is about 310 days
EARLIEST = date(2000, 1, 1)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ReportArgError(ValueError):
    """A report argument the user must change; `code` is the API's error code."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ReportRequest:
    start: date | None  # both None: the current school term
    end: date | None
    school: str | None  # a UAI, upper case; None: every school (the city)
    format: Format
    lang: Lang


def parse_date(name: str, text: str) -> date:
    if not _DATE.fullmatch(text):
        raise ReportArgError(f"{name}: expected a date as YYYY-MM-DD, got {text[:40]!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ReportArgError(f"{name}: {text!r} is not a day of the calendar") from None


def check(start: str | None, end: str | None, school: str | None, fmt: str, lang: str, *, today: date,
          names: tuple[str, str, str, str, str] = ("--from", "--to", "--school", "--format", "--lang")
          ) -> ReportRequest:
    """The request, or ReportArgError. `today` is the local day: the period must be over by then.
    `names` are the arguments' names as the caller shows them (options, or query parameters)."""
    n_from, n_to, n_school, n_format, n_lang = names
    if fmt not in FORMATS:
        raise ReportArgError(f"{n_format}: expected one of {', '.join(FORMATS)}, got {fmt[:40]!r}")
    if lang not in LANGS:
        raise ReportArgError(f"{n_lang}: expected one of {', '.join(LANGS)}, got {lang[:40]!r}")
    uai = None
    if school is not None:
        uai = parse_uai(school)
        if uai is None:
            raise ReportArgError(f"{n_school}: expected {EXPECTED}, got {school[:40]!r}")
    if (start is None) != (end is None):
        raise ReportArgError(f"give both {n_from} and {n_to}, or neither for the current school term")
    first = last = None
    if start is not None and end is not None:
        first, last = parse_date(n_from, start), parse_date(n_to, end)
        yesterday = today - timedelta(days=1)
        if last < first:
            raise ReportArgError(f"the period ends ({last}) before it starts ({first}); swap {n_from} and {n_to}")
        if first < EARLIEST:
            raise ReportArgError(f"{n_from}: {first} is before {EARLIEST}, earlier than any data")
        if last > yesterday:
            raise ReportArgError(f"{n_to}: {last} is not over yet; a report covers completed days, the last "
                                 f"one is yesterday ({yesterday})")
        days = (last - first).days + 1
        if days > MAX_DAYS:
            raise ReportArgError(f"the period spans {days} days; at most {MAX_DAYS} (a school year is about 310): "
                                 "report on a school year or less")
    return ReportRequest(start=first, end=last, school=uai, format=fmt,  # type: ignore[arg-type]
                         lang=lang)  # type: ignore[arg-type]
