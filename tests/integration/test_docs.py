"""Every command block of the README and docs/*.md runs as written, and prints what they show.

One reader on one machine: the test serves the collector as the README's quick start does
(`.venv/bin/tice-collector serve`: the embedded PostgreSQL in the default data directory of
a non-root user, ~/.local/share/tice-telemetry), on a free loopback port that stands in for
the documented 8080. Then it runs README.md, then docs/*.md, each file in a new bash session
(a new terminal), in one working directory with one HOME, so a file reuses what an earlier one
made (secret.txt, device.json), as the reader would. The README must put the venv on the PATH
itself; the docs assume its set-up, so their sessions start with the venv activated.

How blocks are read, marked and compared: tests/doc_blocks.py. A failure names the file, the
line and the command, with the documented and the real output.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests import doc_blocks
from tests.doc_blocks import Block, Command
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_PORT = 8080            # the collector's default port, which the docs use
DOC_HOME = "/home/alice"   # the home directory the docs' output shows
SERVE = {"tice-collector serve", ".venv/bin/tice-collector serve"}  # the collector this test serves
COMMAND_TIMEOUT_S = 180.0  # generous: a shared 2-core machine is slow at times


@dataclass
class Outcome:
    ran_blocks: int = 0
    ran_commands: int = 0
    skipped: list[str] = field(default_factory=list)   # "file:line (reason)"
    not_shell: int = 0
    failures: list[str] = field(default_factory=list)
    stopped: str = ""  # the first file whose commands stopped early; later files may fail for it


class Shell:
    """One bash session, fed one command at a time; returns (exit status, output) of each."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.mark = "@@doc-" + secrets.token_hex(8)
        self.scripts = cwd.parent / "commands"
        self.scripts.mkdir(exist_ok=True)
        # stderr joins stdout as on a terminal; each command reads /dev/null, not this pipe.
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buffer = b""
        self.n = 0

    def run(self, text: str) -> tuple[int | None, str]:
        """Run `text` as a sourced script; (None, output so far) when it does not finish in time."""
        self.n += 1
        script = self.scripts / f"{self.n:03d}.sh"
        script.write_text(text + "\n")
        # $? is restored after the marker, so a documented `echo $?` sees the command's status.
        driver = (f"source {script} </dev/null\n__rc=$?; printf '\\n{self.mark} %d\\n' \"$__rc\"; "
                  "(exit $__rc)\n")
        assert self.proc.stdin is not None
        self.proc.stdin.write(driver.encode())
        self.proc.stdin.flush()
        end = re.compile(rb"\n" + re.escape(self.mark.encode()) + rb" (\d+)\n")
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not (m := end.search(self.buffer)):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                return None, self.buffer.decode(errors="replace")
            for key, _ in self.sel.select(min(left, 1.0)):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    self.buffer += chunk
        out, self.buffer = self.buffer[: m.start()], self.buffer[m.end():]
        return int(m.group(1)), out.decode(errors="replace")

    def close(self) -> None:
        # The session's whole process group: anything a command left running goes with it.
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.sel.close()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class Reader:
    """The reader's machine: a working directory with the README's .venv, a HOME, a collector."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.work = root / "checkout"
        self.home.mkdir()
        self.work.mkdir()
        self.port = free_port()
        self.data_dir = self.home / ".local" / "share" / "tice-telemetry"
        self._venv(self.work / ".venv")
        self.env = self._env()
        self.log = root / "collector.log"
        self.collector: subprocess.Popen[bytes] | None = None

    def _venv(self, link: Path) -> None:
        """The README's `.venv` in the checkout: the venv these tests run in."""
        if sys.prefix != sys.base_prefix:
            link.symlink_to(sys.prefix, target_is_directory=True)
            return
        scripts = Path(sys.executable).parent  # no venv: the scripts' directory stands in for it
        (link / "bin").mkdir(parents=True)
        for name in ("tice-collector", "tice-agent", "python3", "python"):
            if (scripts / name).exists():
                (link / "bin" / name).symlink_to(scripts / name)
        (link / "bin" / "activate").write_text(f'export PATH="{link / "bin"}:$PATH"\n')

    def _env(self) -> dict[str, str]:
        drop = ("TICE_", "XDG_", "VIRTUAL_ENV", "PYTHON")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        # The venv is not on the PATH until a document puts it there.
        env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                      if d and not (Path(d) / "tice-collector").exists())
        env.update(HOME=str(self.home), LC_ALL="C.UTF-8", LANG="C.UTF-8",
                   # Terminal order: Python's stdout unbuffered, as stderr is.
                   PYTHONUNBUFFERED="1",
                   # Where a non-root user's data lives by default; as root it must be said.
                   TICE_DATA_DIR=str(self.data_dir))
        return env

    def serve(self) -> None:
        """`.venv/bin/tice-collector serve`, as the README's quick start, on this test's port."""
        env = dict(self.env, TICE_LISTEN=f"127.0.0.1:{self.port}")
        with self.log.open("wb") as log:
            self.collector = subprocess.Popen([str(self.work / ".venv" / "bin" / "tice-collector"), "serve"],
                                              cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self) -> None:
        import aiohttp

        async def ready() -> bool:
            if self.collector is not None and self.collector.poll() is not None:
                raise AssertionError(f"the collector exited {self.collector.returncode}:\n{self.log.read_text()}")
            try:
                async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, "the documented collector to be ready", timeout=COMMAND_TIMEOUT_S, every=0.2)

    def stop(self) -> tuple[int | None, str]:
        if self.collector is None:
            return None, ""
        if self.collector.poll() is None:
            self.collector.send_signal(signal.SIGTERM)
        try:
            code = self.collector.wait(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.collector.kill()
            code = self.collector.wait(timeout=30)
        # A PostgreSQL still running here (a command killed mid-way still counts as its user).
        pid_file = self.data_dir / "pgdata" / "postmaster.pid"
        if pid_file.exists():
            try:
                psutil.Process(int(pid_file.read_text().split()[0])).terminate()
            except (psutil.Error, ValueError):
                pass
        return code, self.log.read_text(errors="replace")

    # -- what a command is, here

    def command(self, text: str) -> str:
        """The documented command, on this test's port."""
        return re.sub(r"\b(localhost|127\.0\.0\.1):" + str(DOC_PORT) + r"\b", rf"\g<1>:{self.port}", text)

    def as_documented(self, output: str) -> list[str]:
        """Real output, with this test's port and home shown as the docs show them."""
        output = re.sub(r"\b(localhost|127\.0\.0\.1):" + str(self.port) + r"\b", rf"\g<1>:{DOC_PORT}", output)
        return output.replace(str(self.home), DOC_HOME).splitlines()


class Failures:
    """What went wrong, each with file, line, command, documented and real output."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def add(self, block: Block, cmd: Command, problem: str, got: list[str], *, stops: bool = False) -> None:
        def show(lines: list[str]) -> str:
            return "\n".join("    | " + line for line in lines) or "    (nothing)"

        text = (f"{block.path}:{cmd.line}: {problem}\n  $ {cmd.text}\n  documented:\n{show(cmd.expected)}\n"
                f"  got:\n{show(got)}\n  (compared with these masked: {', '.join(doc_blocks.MASKS)})")
        earlier = self.outcome.stopped
        if earlier and earlier != block.path:
            text += f"\n  ({earlier} stopped early: this may follow from it)"
        self.outcome.failures.append(text)
        if stops:
            self.outcome.stopped = self.outcome.stopped or block.path


def run_file(path: Path, reader: Reader, outcome: Outcome, *, activate: bool) -> None:
    """Run one file's command blocks in one new bash session. A command that fails, or hangs,
    stops the file (what follows depends on it); a differing output is reported and the file
    goes on."""
    name = str(path.relative_to(ROOT))
    failures = Failures(outcome)
    try:
        blocks = doc_blocks.parse(path.read_text(encoding="utf-8"), name)
    except doc_blocks.DocError as e:
        outcome.failures.append(str(e))
        return
    shell = Shell(reader.work, reader.env)
    try:
        if activate:
            code, out = shell.run("source .venv/bin/activate")
            assert code == 0, f"{name}: cannot activate the README's venv: {out}"
        for block in blocks:
            if block.lang in doc_blocks.OTHER_COMMANDS:
                if block.not_run is None:
                    outcome.failures.append(f"{name}:{block.line}: a {block.lang} block cannot run here: mark it "
                                            "<!-- not run: reason -->")
                outcome.skipped.append(f"{name}:{block.line} ({block.not_run})")
                continue
            if block.lang not in doc_blocks.SHELL:
                outcome.not_shell += 1
                continue
            if block.not_run is not None:
                outcome.skipped.append(f"{name}:{block.line} ({block.not_run})")
                continue
            outcome.ran_blocks += 1
            for cmd in block.commands():
                outcome.ran_commands += 1
                if cmd.text.strip() in SERVE:  # the collector this test serves: compare its log
                    log = reader.as_documented(reader.log.read_text(errors="replace"))
                    if not doc_blocks.same_output(cmd.expected, log[: len(cmd.expected)]):
                        failures.add(block, cmd, "the collector's log differs", log[: len(cmd.expected) + 2])
                    continue
                code, out = shell.run(reader.command(cmd.text))
                got = reader.as_documented(out)
                if code is None:
                    failures.add(block, cmd, f"did not finish in {COMMAND_TIMEOUT_S:g} s (a daemon? mark the "
                                 "block <!-- not run: reason -->)", got, stops=True)
                    return
                if cmd.check_exit and code != 0:
                    failures.add(block, cmd, f"exit status {code}, expected 0 (follow it with `$ echo $?` "
                                 "when it is meant to fail)", got, stops=True)
                    return
                if block.output_varies is None and block.lang == "console" and \
                        not doc_blocks.same_output(cmd.expected, got):
                    failures.add(block, cmd, "the output differs", got)
    finally:
        shell.close()


@pytest.fixture
def reader(data_root: Path):
    return Reader(data_root)


async def test_every_command_block_runs_as_written(reader: Reader, request: pytest.FixtureRequest) -> None:
    assert shutil.which("curl"), "the docs use curl, as the README says: install it (apt-get install curl)"
    outcome = Outcome()
    reader.serve()
    try:
        await reader.wait_ready()
        for path in FILES:
            run_file(path, reader, outcome, activate=path.name != "README.md")
    finally:
        code, log = reader.stop()
    summary = (f"docs: ran {outcome.ran_blocks} command blocks ({outcome.ran_commands} commands) in "
               f"{len(FILES)} files; skipped {len(outcome.skipped)} marked not run; "
               f"{outcome.not_shell} data blocks")
    request.config.stash[doc_blocks.SUMMARY] = summary + "".join(f"\n  not run: {s}" for s in outcome.skipped)
    assert not outcome.failures, summary + "\n\n" + "\n\n".join(outcome.failures)
    assert code == 0 and "Traceback" not in log, f"the documented collector exited {code}:\n{log}"
    assert outcome.ran_commands > 0, summary

