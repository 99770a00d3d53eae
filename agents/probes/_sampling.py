"""Sampling within a probe's interval: a background task takes a sample every few seconds
and adds the time since the previous sample to the category the sample falls in. `collect()`
then reads and resets the totals. Slots are short (default 5 s), so the totals are precise to
a few seconds whatever the probe's reporting interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("tice.agent.probes")

Classify = Callable[[float], Awaitable[str]]  # given the slot length, the slot's category


@dataclass
class Sampler:
    classify: Classify
    every_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    totals: dict[str, float] = field(default_factory=dict)
    _last: float | None = None
    _started: float | None = None
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # The first slot starts when the probe is built, not at its first sample.
        self._last = self._started = self.clock()

    async def sample(self) -> None:
        """Close the slot since the previous sample."""
        now = self.clock()
        assert self._last is not None
        slot = max(0.0, now - self._last)
        self._last = now
        category = await self.classify(slot)
        self.totals[category] = self.totals.get(category, 0.0) + slot

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="probe-sampler")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.sample()
            except Exception as e:  # a failing source must not kill the sampling
                log.debug("sample failed: %s", e)

    async def drain(self) -> tuple[float, dict[str, float]]:
        """Take a last sample now, return (elapsed, totals) since the previous drain, reset."""
        await self.sample()
        assert self._started is not None and self._last is not None
        elapsed = self._last - self._started
        totals, self.totals = self.totals, {}
        self._started = self._last
        return elapsed, totals

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
