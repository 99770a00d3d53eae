"""What the benchmark scripts share: a free loopback port, a clean environment, readiness, and
servers that never outlive the bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any TICE_* setting of the caller's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    env.update(extra)
    return env


def finite_float(text: str) -> float:
    """An argparse type: a finite number (float() also takes nan, inf and 1e400)."""
    value = float(text)  # ValueError: argparse's "invalid finite_float value"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


async def start_embedded(where: Path) -> tuple[str, Any]:
    """The embedded PostgreSQL started in `where` from a thread (its start takes 1-2 s), as
    (url, server). Should the bench be stopped meanwhile (Ctrl-C, SIGTERM), the start, which a
    thread cannot abandon, is waited for and the server stopped: before, it went on starting in a
    directory the bench was removing, and outlived the bench."""
    from tice_collector import embedded

    # An executor future, not a task: on SIGTERM asyncio.run's teardown cancels every task, and a
    # cancelled task would no longer give the server it started.
    starting = asyncio.get_running_loop().run_in_executor(None, embedded.start, where)
    try:
        return await asyncio.shield(starting)
    except BaseException:
        with uninterrupted():
            try:
                _, server = await starting
            except Exception:  # it did not start: nothing to stop
                pass
            else:
                await asyncio.to_thread(server.cleanup)
        raise


# Settings a bench sets itself for the collector it starts.
_BENCH_OWN = frozenset({"database_url", "listen", "data_dir"})


def setting_overrides(ap: argparse.ArgumentParser, pairs: Iterable[str]) -> dict[str, str]:
    """`--set KEY=VALUE` options as {KEY: VALUE}, each KEY one of the collector's settings
    (collector/tice_collector/settings.py) with a value it accepts, checked before anything
    starts; else a one-line usage error."""
    from tice_collector.settings import Settings, SettingsError, load_settings

    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            ap.error(f"--set {pair!r}: expected KEY=VALUE, e.g. --set writer_tasks=1")
        if key not in Settings.__struct_fields__:
            ap.error(f"--set {pair!r}: {key!r} is not a collector setting (see collector.example.toml)")
        if key in _BENCH_OWN:
            ap.error(f"--set {pair!r}: the bench sets {key} itself")
        out[key] = value
    try:
        load_settings(environ={f"TICE_{key.upper()}": value for key, value in out.items()})
    except SettingsError as e:
        ap.error(f"--set: {e}")
    return out


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until `url` answers 200 (a collector's /readyz), or exit with a clear line (at once
    when `proc`, the server, has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}) before {url} was ready: see its lines above")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready after {timeout:g} s")


def die_with_parent() -> None:
    """preexec_fn for a server the bench starts: the kernel sends it SIGTERM when the bench
    dies, however it dies, so no server outlives a killed run (Linux; a no-op elsewhere).
    Start such children from the main thread: the signal follows the thread that forked."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (timeout(1), kill) into SystemExit, so the bench's finally blocks clean up."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored while a bench stops what it started (its servers, its
    temporary directory): interrupted halfway, a PostgreSQL or a directory of 100 MB was left.
    From the main thread (where signal handlers are set)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(main: Callable[[], object]) -> None:
    """Run a bench's `main` (an async one as `lambda: asyncio.run(main())`): Ctrl-C stops it with
    one line instead of a traceback, once its `finally` blocks have stopped what it started; a
    closed output pipe stops it quietly."""
    try:
        main()
    except KeyboardInterrupt:
        print("stopped (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:
        # The reader of its output left (`| head`): stop quietly, as a Unix filter does; the
        # output is pointed at /dev/null first, so the interpreter's last flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None


def code_under_test(package: str = "tice_collector") -> str:
    """Where `package` is imported from and that checkout's commit ("+ changes" when it has
    uncommitted ones), to print beside the figures: a bench measures whatever code comes first
    on the path, PYTHONPATH included (bench/README.md, A/B against an older commit)."""
    import importlib

    where = Path(importlib.import_module(package).__file__ or "").resolve().parent
    git = ["git", "-C", str(where)]
    done = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"{package} from {where} (not a git checkout)"
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True,
                           check=False).stdout.strip()
    return f"{package} from {where}, commit {done.stdout.strip()}{' + changes' if dirty else ''}"


# The distributions of this repository: folder -> the wheel's import package.
DISTRIBUTIONS = {"wire": "tice_wire", "agents": "tice_agent", "collector": "tice_collector"}
_NOT_SOURCE = ("tests", "chromeos", "systemd", "windows", "build", "dist", "*.egg-info", "__pycache__",
               "node_modules")


def build_wheels(root: Path, folders: Iterable[str], out: Path) -> dict[str, Path]:
    """Wheels of these distributions (folders of `root`, e.g. "wire", "agents"), built from a
    copy of their sources so that the checkout gets no build/ or egg-info folder. Returns
    import package -> wheel. Needs setuptools from the package index (build isolation)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tice-src-") as src:
        copies = []
        for folder in folders:
            copy = Path(src) / folder
            shutil.copytree(root / folder, copy, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
            copies.append(str(copy))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                               "-w", str(out), *copies], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"pip wheel failed ({done.returncode}): {done.stderr[-3000:]}")
    return {w.name.split("-")[0]: w for w in out.glob("*.whl")}


def agent_venv(root: Path, where: Path) -> Path:
    """A venv holding the agent's distribution alone (tice-agent, tice-wire, msgspec, psutil, at
    the lock's versions), as a laptop installs it. Returns its `tice-agent` command."""
    import subprocess
    import sys

    wheels = build_wheels(root, ("wire", "agents"), where / "dist")
    venv = where / "agent-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                           "-c", str(root / "constraints.txt"), "--find-links", str(where / "dist"),
                           str(wheels["tice_agent"])], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"installing the agent's wheel failed: {done.stderr[-3000:]}")
    return venv / "bin" / "tice-agent"
