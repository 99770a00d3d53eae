"""Small fakes shared by the unit tests: settable clocks, and a wire round-trip check."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from collector.wire import AnyRecord


class Clock:
    """A monotonic clock the test moves by hand (`clock.t += 5`)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Machine:
    """One computer's clocks: a boot clock that counts suspend (CLOCK_BOOTTIME), and a wall
    clock that follows it until someone steps it (NTP)."""

    def __init__(self, wall: datetime) -> None:
        self.boot = 1000.0                       # seconds since boot, suspend included
        self.offset = wall.timestamp() - self.boot  # wall clock minus boot clock

    def boot_clock(self) -> float:
        return self.boot

    def wall(self) -> float:
        return self.boot + self.offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), UTC)

    def run(self, seconds: float) -> None:
        self.boot += seconds

    suspend = run  # the boot clock counts suspend; only the sampler's gaps tell them apart

    def step_wall(self, to: datetime) -> None:
        """NTP steps the wall clock; the boot clock does not move."""
        self.offset = to.timestamp() - self.boot


def roundtrip(records: list) -> list:
    """Every record survives JSON encoding and decoding as the collector reads it."""
    out = [msgspec.json.decode(msgspec.json.encode(r), type=AnyRecord) for r in records]
    assert out == records
    return out
