"""The daemon's memory: malloc's free pages go back to the system, TLS only for https, the
version without importlib.metadata (bench/agent_footprint.py measures the whole agent)."""

from __future__ import annotations

import ctypes
import platform
import sys
from pathlib import Path

import pytest

from tice_agent import __version__, memory
from tice_agent.sender import Sender, agent_version

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def rss_anon_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_trim_gives_freed_malloc_memory_back() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 MiB in 4 KiB blocks (below the mmap threshold: inside the heap), then one block above
    # them, so that freeing them leaves a hole glibc does not trim by itself.
    blocks = [libc.malloc(4096) for _ in range(16384)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)  # touched: resident
    pin = libc.malloc(4096)
    for b in blocks:
        libc.free(b)
    before = rss_anon_mib()
    assert memory.trim() is True
    after = rss_anon_mib()
    libc.free(pin)
    assert before - after > 32, f"RssAnon {before:.1f} MiB before trim, {after:.1f} MiB after"


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_one_arena_is_taken_by_glibc() -> None:
    assert memory.one_arena() is True


def test_not_glibc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    assert memory.trim() is False
    assert memory.one_arena() is False


def test_no_tls_context_for_a_loopback_http_collector(tmp_path: Path) -> None:
    from tice_agent.config import AgentConfig

    sender = Sender.__new__(Sender)  # only the TLS part of a sender is looked at
    sender.cfg, sender._tls = AgentConfig(state_dir=str(tmp_path)), None
    assert sender._context("http://127.0.0.1:8080") is None
    tls = sender._context("HTTPS://collector.example")
    assert tls is not None and tls.verify_mode.name == "CERT_REQUIRED"
    assert sender._context("https://collector.example") is tls  # made once


def test_sent_version_is_the_distributions() -> None:
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    assert agent_version() == __version__
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == __version__
    try:
        installed = version("tice-agent")
    except PackageNotFoundError:  # the developer's install: the agent's folder, no tice-agent wheel
        return
    assert installed == __version__
