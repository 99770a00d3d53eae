"""Argument types the commands share: checked by argparse, so bad input is exit 2 with the
argument's name and why, before any database work."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tice_collector import names

PG_INT8_MAX = 2**63 - 1  # the largest id PostgreSQL's bigint holds


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` inclusive."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected {low} to {high}")
        return value

    parse.__name__ = "whole number"
    return parse


def name(what: str, max_len: int, *, blank_ok: bool = False) -> Callable[[str], str]:
    """An argparse type: a name an admin types, trimmed (names.check says what is refused)."""

    def parse(text: str) -> str:
        try:
            return names.check(text, what, max_len, blank_ok=blank_ok)
        except names.InvalidName as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = what
    return parse
