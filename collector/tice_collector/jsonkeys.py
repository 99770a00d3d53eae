"""Repeated keys in a JSON body: `{"active_s": 42, "active_s": 86400}` is refused, not read.

JSON parsers disagree on a repeated key (msgspec, like most, keeps the last; others keep the
first or fail), so a body that repeats one means different things to different readers: it is
refused with 400. msgspec cannot report repeats (msgspec issue #648), so they are found here,
at little cost on the hot path:

- A body that is byte for byte the canonical encoding of what msgspec decoded from it (what
  the agent sends: the same wire types through msgspec) has no repeated key, by construction.
  Re-encoding and comparing costs a fraction of the decode.
- Any other body (another client, whitespace, another field order, an older agent) is parsed
  a second time by the standard library's `json`, whose `object_pairs_hook` sees every pair.
"""

from __future__ import annotations

import json
from typing import Any


class RepeatedKey(ValueError):
    """`key` appears twice in the `index`-th object of the body to close (0-based)."""

    def __init__(self, key: str, index: int) -> None:
        super().__init__(key, index)
        self.key, self.index = key, index


class _Pairs:
    """object_pairs_hook that counts objects in the order they close (inner before outer)."""

    def __init__(self) -> None:
        self.closed = 0

    def __call__(self, pairs: list[tuple[str, Any]]) -> None:
        if len(pairs) > 1:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise RepeatedKey(key, self.closed)
                seen.add(key)
        self.closed += 1


def check(body: bytes, canonical: bytes) -> None:
    """Raise RepeatedKey when an object of `body` (valid JSON) names a key twice.

    `canonical` is the encoding of what was decoded from `body`; when they are equal the body
    needs no second look. Objects are numbered in the order they close: in a report batch,
    records[0], records[1], ... and then the batch itself (records hold no nested object).
    """
    if body == canonical:
        return
    json.loads(body, object_pairs_hook=_Pairs())
