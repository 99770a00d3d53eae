"""The command blocks of the README and docs/*.md, as a reader copy-pastes them.

A fenced block is one of:
- `console`: `$ command` lines, each followed by the output it prints (stdout and stderr, as
  a terminal shows them). A command continues on the next line after a trailing `\\`, and
  through a here-document (`<<EOF` ... `EOF`).
- `sh` (or `bash`, `shell`): commands only, no output shown.
- another command language (`powershell`, `bat`, ...): never run here.
- data (`json`, `toml`, `ini`, `nginx`, `text`, ...): not commands.

A command block that cannot run in a test (a production address, systemd, Windows, a daemon
that runs until stopped) carries, on the line before it, a marker a reader does not see on the
rendered page: `<!-- not run: why -->`. `<!-- output varies: why -->` runs the block and checks
that each command succeeds, without comparing its output (what a probe reads on this machine).
Every fenced block must say its language, so no command block goes unnoticed.

A command is expected to exit 0, unless the next command is `echo $?`: then its documented
output (the exit code) is what is checked.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import pytest

SUMMARY = pytest.StashKey[str]()  # what the docs test ran and skipped, for the terminal summary
SHELL = {"console", "sh", "bash", "shell"}
OTHER_COMMANDS = {"powershell", "pwsh", "ps1", "bat", "cmd", "batch"}
MARKER = re.compile(r"<!--\s*(not run|output varies):\s*(.+?)\s*-->")
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
HEREDOC = re.compile(r"(?<!<)<<-?(?!<)\s*(['\"]?)([A-Za-z_]\w*)\1")


class DocError(Exception):
    """The markdown itself breaks a rule above; str() names file and line."""


@dataclass
class Command:
    line: int                       # line of the `$` in the markdown file
    text: str                       # the command as typed, continuation lines included
    expected: list[str] = field(default_factory=list)
    check_exit: bool = True         # False when the next command shows `echo $?`


@dataclass
class Block:
    path: str
    line: int                       # line of the opening fence
    lang: str
    lines: list[str]
    not_run: str | None = None      # the reason, when marked
    output_varies: str | None = None

    @property
    def runs(self) -> bool:
        return self.lang in SHELL and self.not_run is None

    def commands(self) -> list[Command]:
        """The block's commands with their documented output."""
        first = self.line + 1
        if self.lang == "console":
            cmds = _console(self.lines, first, self.path)
        else:
            cmds = _script(self.lines, first, self.path)
        for cmd, nxt in itertools.pairwise(cmds):
            if nxt.text.strip() == "echo $?":
                cmd.check_exit = False
        return cmds


def parse(text: str, path: str) -> list[Block]:
    """Every fenced block of a markdown file, with its marker if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    pending: tuple[str, str, int] | None = None  # (kind, reason, line) of the last marker
    while i < len(lines):
        m = FENCE.match(lines[i])
        marker = MARKER.search(lines[i])
        if marker:
            pending = (marker.group(1), marker.group(2), i + 1)
            i += 1
            continue
        if not m:
            if lines[i].strip():
                pending = None  # a marker applies only to the block right after it
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        start = i + 1
        if not lang:
            raise DocError(f"{path}:{start}: a fenced block without a language; say what it is "
                           "(console, sh, json, toml, text, ...)")
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise DocError(f"{path}:{start}: the block is never closed")
        block = Block(path, start, lang, body)
        if pending:
            kind, reason, _ = pending
            if kind == "not run":
                block.not_run = reason
            else:
                block.output_varies = reason
            pending = None
        blocks.append(block)
        i += 1
    return blocks


def _take(lines: list[str], i: int, text: str, where: str) -> tuple[str, int]:
    """The whole command starting at lines[i] (whose command text is `text`): continuation
    lines after a trailing backslash, then its here-documents. Returns (text, its last index)."""
    parts = [text]
    while parts[-1].endswith("\\") and i + 1 < len(lines):
        i += 1
        parts.append(lines[i])
    for m in HEREDOC.finditer("\n".join(parts)):
        end = m.group(2)
        while True:
            i += 1
            if i >= len(lines):
                raise DocError(f"{where}: a here-document never ends (no line `{end}`)")
            parts.append(lines[i])
            if lines[i].strip() == end:
                break
    return "\n".join(parts), i


def _console(lines: list[str], first: int, path: str) -> list[Command]:
    cmds: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ ") or line == "$":
            text, last = _take(lines, i, line[2:], f"{path}:{first + i}")
            cmds.append(Command(first + i, text))
            i = last + 1
            continue
        if not cmds:
            raise DocError(f"{path}:{first + i}: output before any `$ command` line in a console block")
        cmds[-1].expected.append(line)
        i += 1
    return cmds


def _script(lines: list[str], first: int, path: str) -> list[Command]:
    cmds: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() and not line.lstrip().startswith("#"):
            text, i = _take(lines, i, line, f"{path}:{first + i}")
            cmds.append(Command(first + i - text.count("\n"), text))
        i += 1
    return cmds


# ---------------------------------------------------------------- comparing output

# What legitimately differs from one run to the next is masked, on both sides, before the
# documented output is compared with the real one. Nothing else is: counts, codes, names and
# messages must match as written.
MASKS: dict[str, tuple[re.Pattern[str], str]] = {
    "uuids": (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    "tokens and secrets": (re.compile(r"\b(tice_(?:dev|enr)_)[A-Za-z0-9_-]{16,}"), r"\1<secret>"),
    "timestamps": (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?"), "<time>"),
    "migration lists": (re.compile(r"\b\d{4}_\w+(?:, \d{4}_\w+)*"), "<migrations>"),  # grow with each release
    "decimals": (re.compile(r"-?\b\d+\.\d+\b"), "<decimal>"),  # durations, clock offsets, ratios
    "ages": (re.compile(r"\b\d+ s ago\b|\bin \d+ s\b"), "<age>"),
    "pids": (re.compile(r"\bpid \d+\b"), "pid <n>"),
    "salts": (re.compile(r'("peripheral_salt":")[0-9a-f]{64}"'), r'\1<salt>"'),
    "free space": (re.compile(r"\b\d+ bytes free\b"), "<n> bytes free"),  # `tice-agent status`: this disk's
}


def mask(line: str) -> str:
    for pattern, replacement in MASKS.values():
        line = pattern.sub(replacement, line)
    return line.rstrip()


def same_output(expected: list[str], got: list[str]) -> bool:
    return _trim([mask(x) for x in expected]) == _trim([mask(x) for x in got])


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines.pop()
    return lines
