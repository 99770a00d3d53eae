"""What the benchmark scripts share: a free loopback port, a clean environment, readiness, and
servers that never outlive the bench."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any TICE_* setting of the caller's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    env.update(extra)
    return env


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Block until `url` answers 200 (a collector's /readyz), or exit with a clear line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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
