"""The agent's state directory: credentials, the status file, the single-instance lock.

Layout (directory mode 0700, files 0600, because the token is a credential):
  credentials.json   server, device id, token, school, serial, kind, the deployment's salt for
                     peripheral identities (+ the enrol secret only when the config says
                     keep_secret = true)
  status.json        sender and probe outcomes, for `tice-agent status` while the daemon runs
  spool.sqlite       records waiting to be sent (agents/tice_agent/spool.py)
  agent.lock         held by the running daemon
  disks.json         the backup disks seen (hashed identity, last connection), when the disk
                     probe runs

Files are replaced atomically (write a temporary file, then rename), so a reader or a crash
never sees half a file. The status file is the exception when the disk is full: a new file
cannot be written then, so it is overwritten in place (it is padded with a spare KiB so that
the next one fits); a reader may then see it half-written, and shows nothing for that moment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec
from msgspec import Struct, field

if TYPE_CHECKING:
    from tice_agent.spool import Spool

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
    # The deployment's secret for peripheral identities (see tice_wire.PeripheralId).
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


class SpoolStatus(Struct, kw_only=True):
    """What the daemon knows of its spool that the spool file may not hold yet (a full disk)."""

    trouble: str | None = None            # why it cannot write ("disk full", ...); None when it can
    trouble_since: datetime | None = None
    failures: int = 0                     # failed writes since then
    free_bytes: int | None = None         # free bytes of the state directory's disk at the last failure
    unsaved_dropped: int = 0              # records dropped and counted in memory, not in the file yet
    generated: int = 0                    # records the probes handed to the spool since the daemon started
    spool_id: str | None = None           # the spool, and the last seq it gave out: if a power cut
    last_seq: int = 0                     # loses committed records, their seqs are not given again


class Status(Struct, kw_only=True):
    sender: SenderStatus = field(default_factory=SenderStatus)
    probes: dict[str, ProbeResult] = {}
    spool: SpoolStatus = field(default_factory=SpoolStatus)
    pid: int | None = None
    started_at: datetime | None = None


def ensure_dir(path: Path) -> Path:
    """`path` as a directory: created readable by the owner only (0700) when it does not exist.

    An existing directory keeps its mode: it is the administrator's (a systemd StateDirectory, a
    mount point), and `state_dir` may name any path, even a system one; the files inside are
    written 0600 anyway (write_private). Raises OSError when it cannot be created.
    """
    if path.is_dir():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:  # created meanwhile by another process, or a file: the caller checks
        return path
    if os.name == "posix":
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
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


class CredentialsError(Exception):
    """credentials.json is there but cannot be used (damaged, unreadable); the message names
    the file and says what to do."""


RE_ENROL = "re-enrol this device with `tice-agent enroll --server URL --secret -`"


def load_credentials(state_dir: Path) -> Credentials | None:
    """The credentials; None when the device was never enrolled (no file). Raises
    CredentialsError when the file cannot be read or is not credentials (a hand edit, a disk
    fault): only enrolling again makes new ones (the token is shown to nobody)."""
    path = state_dir / CREDENTIALS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CredentialsError(f"{path}: cannot read the credentials: {e.strerror or e}; fix its owner "
                               f"and mode (0600, the agent's user), or {RE_ENROL}") from None
    try:
        return msgspec.json.decode(data, type=Credentials)
    except msgspec.ValidationError as e:  # msgspec names the field, never its value (the token)
        reason = str(e)[:1].lower() + str(e)[1:]
    except msgspec.DecodeError:
        reason = "empty" if not data.strip() else "not JSON"
    raise CredentialsError(f"{path}: damaged credentials ({reason}); {RE_ENROL}")


def credentials_stamp(state_dir: Path) -> tuple[int, int, int] | None:
    """(inode, mtime in ns, size) of credentials.json, None without one: a new enrolment
    replaces the file (a new inode), an edit changes its mtime."""
    try:
        s = os.stat(state_dir / CREDENTIALS)
    except OSError:
        return None
    return s.st_ino, s.st_mtime_ns, s.st_size


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
    data = msgspec.json.encode(status)
    # Whole KiB and one spare: the next status fits in place even if it grew (a trouble to tell);
    # JSON allows the trailing spaces.
    data += b" " * (-len(data) % 1024 + 1024)
    try:
        write_private(state_dir / STATUS, data, durable=False)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or not _overwrite(
                state_dir / STATUS, data):
            raise


def _overwrite(path: Path, data: bytes) -> bool:
    """Write data over the file's own blocks (a full disk gives no new ones); False if it is too small."""
    data = data.rstrip(b" ")  # the padding is only there to make room: it may shrink
    try:
        with path.open("r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if len(data) > size:
                return False
            f.write(data + b" " * (size - len(data)))
    except OSError:
        return False
    return True


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
        self.spool: Spool | None = None  # the daemon's spool: its memory goes into each save

    def save(self) -> None:
        if self.spool is not None:
            self.status.spool = spool_status(self.spool)
        try:
            save_status(self.dir, self.status)
        except OSError:
            pass  # a full disk must not stop collection; the spool reports its own trouble


def spool_status(spool: Spool) -> SpoolStatus:
    from datetime import UTC

    t = spool.trouble
    return SpoolStatus(trouble=t.reason if t else None,
                       trouble_since=datetime.fromtimestamp(t.since, UTC) if t else None,
                       failures=t.failures if t else 0, free_bytes=t.free_bytes if t else None,
                       unsaved_dropped=spool.unsaved_dropped, generated=spool.generated,
                       spool_id=str(spool.spool_id), last_seq=spool.last_seq)
