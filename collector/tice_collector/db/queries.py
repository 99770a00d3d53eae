"""Named SQL queries, loaded once from queries.sql ("-- name: x" blocks)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def load() -> dict[str, str]:
    text = resources.files("tice_collector.db").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"queries.sql: query {name!r} defined twice")
        queries[name] = body.strip()
    return queries


def q(name: str) -> str:
    return load()[name]
