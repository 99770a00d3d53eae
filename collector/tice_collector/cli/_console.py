"""What every command line of the collector shares: its one-line error and its progress line."""

from __future__ import annotations

import sys


class CliError(Exception):
    """A user-facing failure: printed as one line, with an exit code (2: the arguments, 1: the system)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class ProgressLine:
    """A single self-updating progress line on a terminal; nothing when output is piped."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.tty = sys.stderr.isatty()
        self.step = max(1, total // 100)

    def update(self, n: int) -> None:
        if self.tty and (n % self.step == 0 or n == self.total):
            sys.stderr.write(f"\r{self.label}: {n}/{self.total} ({100 * n // max(1, self.total)} %)")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
