"""A failing condition, logged once per change of state instead of once per occurrence.

A full disk makes every write fail, ten times a second; logging each would fill the very disk
that is full (and the journal with it). A `Condition` logs the first failure, then counts the
repeats silently; it logs again only when the failure changes (a different reason) or ends,
and that line carries how many times the previous state repeated.
"""

from __future__ import annotations

import logging


class Condition:
    """`fail(reason)` at every failure, `ok()` at every success; each logs only on a change."""

    def __init__(self, log: logging.Logger, what: str, level: int = logging.ERROR) -> None:
        self.log, self.what, self.level = log, what, level
        self.reason: str | None = None  # the current failure, None while things work
        self.repeats = 0                # failures with that reason so far

    @property
    def failing(self) -> bool:
        return self.reason is not None

    def fail(self, reason: str, detail: str = "", *, exc_info: bool = False) -> bool:
        """Count a failure; True when this one was logged (a new or a changed reason). `reason`
        names the state; `detail` (free bytes, say) goes into the line but changes nothing."""
        if reason == self.reason:
            self.repeats += 1
            return False
        text = f"{reason}; {detail}" if detail else reason
        if self.reason is None:
            self.log.log(self.level, "%s: %s", self.what, text, exc_info=exc_info)
        else:
            self.log.log(self.level, "%s: %s (the previous failure repeated %d times: %s)", self.what, text,
                         self.repeats, self.reason, exc_info=exc_info)
        self.reason, self.repeats = reason, 1
        return True

    def ok(self, note: str = "") -> bool:
        """The condition cleared; True when that was logged (it was failing)."""
        if self.reason is None:
            return False
        self.log.warning("%s: recovered after %d failures (last: %s)%s", self.what, self.repeats, self.reason,
                         f"; {note}" if note else "")
        self.reason, self.repeats = None, 0
        return True
