"""The agent's state directory: credentials, the status file, the single-instance lock.

Layout (directory mode 0700, files 0600, because the token is a credential):
  credentials.json   server, device id, token, school, serial, kind, the deployment's salt for
                     peripheral identities (+ the enrol secret only when the config says
                     keep_secret = true)
  status.json        sender and probe outcomes, for `tice-agent status` while the daemon runs
  spool.sqlite       records waiting to be sent (agents/spool.py)
  agent.lock         held by the running daemon
  disks.json         the backup disks seen (hashed identity, last connection), when the disk
                     probe runs

Files are replaced atomically (write a temporary file, then rename), so a reader or a crash
never sees half a file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec
from msgspec import Struct, field

CREDENTIALS = "credentials.json"
STATUS = "status.json"
SPOOL = "spool.sqlite"
LOCK = "agent.lock"
DISKS = "disks.json"


class Credentials(Struct, kw_only=True):
    server: str
    device_id: uuid.UUID
    token: str
    school: str
    serial: str
    kind: str
    enrolled_at: datetime
    secret: str | None = None
    # The deployment's secret for peripheral identities (see collector.wire.PeripheralId).
    peripheral_salt: str | None = None

    def __repr__(self) -> str:  # never show the token or the secret in a log or a traceback
        return f"Credentials(server={self.server!r}, device_id={self.device_id}, school={self.school!r})"


class SenderStatus(Struct, kw_only=True):
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    attempt: int = 0                      # consecutive failed attempts: the backoff exponent
    next_attempt_at: datetime | None = None
    batches_sent: int = 0
    records_sent: int = 0
    records_duplicate: int = 0
    records_rejected: int = 0             # outside the collector's time window (acknowledged)
    auth_failed: bool = False             # 401 and no kept secret: an admin must re-enrol
    clock_offset_s: float | None = None


class ProbeResult(Struct, kw_only=True):
    ok: bool
    at: datetime
    duration_s: float
    records: int = 0
    error: str | None = None
    runs: int = 0
    failures: int = 0
    # What the probe wants an admin to see even when it works: the idle source in use and
    # whether it can classify, the health sources that cannot be read, ...
    note: str | None = None


class Status(Struct, kw_only=True):
    sender: SenderStatus = field(default_factory=SenderStatus)
    probes: dict[str, ProbeResult] = {}
    pid: int | None = None
    started_at: datetime | None = None


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if os.name == "posix":
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` atomically with `data`, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load_credentials(state_dir: Path) -> Credentials | None:
    try:
        data = (state_dir / CREDENTIALS).read_bytes()
    except FileNotFoundError:
        return None
    return msgspec.json.decode(data, type=Credentials)


def save_credentials(state_dir: Path, creds: Credentials) -> None:
    ensure_dir(state_dir)
    write_private(state_dir / CREDENTIALS, msgspec.json.encode(creds))


def load_status(state_dir: Path) -> Status:
    try:
        return msgspec.json.decode((state_dir / STATUS).read_bytes(), type=Status)
    except (FileNotFoundError, msgspec.DecodeError):
        # A missing or unreadable status file only costs history, never data.
        return Status()


def save_status(state_dir: Path, status: Status) -> None:
    # Not fsynced: the status is informational and rewritten every probe round.
    write_private(state_dir / STATUS, msgspec.json.encode(status), durable=False)


class InstanceLock:
    """An exclusive lock on agent.lock, so two daemons never share one spool."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK
        self._file: IO[Any] | None = None

    def acquire(self, wait_s: float = 0.0) -> bool:
        """Take the lock; keep trying for `wait_s` seconds. `tice-agent status` holds it for an
        instant to see whether a daemon runs, so a daemon starting just then must retry."""
        deadline = time.monotonic() + wait_s
        while not self._try():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _try(self) -> bool:
        f = open(self.path, "a+b")  # held open for the daemon's lifetime
        try:
            if sys.platform == "win32":
                import msvcrt

                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._file = f
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StatusStore:
    """The status shared by the runner and the sender, saved after each change."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.status = load_status(state_dir)

    def save(self) -> None:
        try:
            save_status(self.dir, self.status)
        except OSError:
            pass  # a full disk must not stop collection; the spool reports its own trouble
