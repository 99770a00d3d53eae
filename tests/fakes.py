"""Small fakes shared by the unit tests: a settable clock, and a wire round-trip check."""

from __future__ import annotations

import msgspec

from collector.wire import AnyRecord


class Clock:
    """A monotonic clock the test moves by hand (`clock.t += 5`)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def roundtrip(records: list) -> list:
    """Every record survives JSON encoding and decoding as the collector reads it."""
    out = [msgspec.json.decode(msgspec.json.encode(r), type=AnyRecord) for r in records]
    assert out == records
    return out
