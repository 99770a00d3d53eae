"""Just enough of the Wayland wire protocol to watch ext-idle-notify-v1 (wayland-protocols,
staging): is the user idle, by the compositor's own account?

KDE Plasma (KWin), COSMIC, sway, Hyprland, niri and other wlroots or Smithay compositors
implement it; GNOME's Mutter does not (the usage probe asks Mutter over D-Bus instead). The
protocol tells "idle" once no input came for `timeout` ms, and "resumed" at the next input;
it never tells how long ago the last input was, and a notification is not idle for its first
`timeout` ms, whatever the user did before it was made.

The wire format (wayland.freedesktop.org/docs/html/ch04.html#sect-Protocol-Wire-Format): each
message is the sender object id (u32), then (size << 16 | opcode) (u32), then the arguments,
each padded to 4 bytes, in the host's byte order; a string is its length with the NUL, the
bytes, the NUL and padding. Object 1 is wl_display. No file descriptor is ever passed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
import time
from pathlib import Path

from tice_agent.probes._run import Monotonic, ParseError

ORDER = "<" if sys.byteorder == "little" else ">"
DISPLAY = 1
# Requests (object, opcode) and events we use, from wayland.xml and ext-idle-notify-v1.xml.
DISPLAY_SYNC, DISPLAY_GET_REGISTRY = 0, 1
DISPLAY_ERROR, DISPLAY_DELETE_ID = 0, 1
REGISTRY_BIND = 0
REGISTRY_GLOBAL = 0
CALLBACK_DONE = 0
NOTIFIER_GET_IDLE_NOTIFICATION, NOTIFIER_GET_INPUT_IDLE_NOTIFICATION = 1, 2
NOTIFICATION_IDLED, NOTIFICATION_RESUMED = 0, 1
NOTIFIER = "ext_idle_notifier_v1"
SEAT = "wl_seat"


def pack_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack(ORDER + "I", len(data)) + data + b"\0" * (-len(data) % 4)


def unpack_string(body: bytes, offset: int) -> tuple[str, int]:
    """(the string at offset, the offset after it); ParseError when it runs past the body."""
    if offset + 4 > len(body):
        raise ParseError("wayland: a string argument runs past its message")
    (length,) = struct.unpack_from(ORDER + "I", body, offset)
    end = offset + 4 + length
    if length == 0 or end > len(body) or body[end - 1] != 0:
        raise ParseError("wayland: a string argument runs past its message or lacks its NUL")
    text = body[offset + 4:end - 1].decode(errors="replace")
    return text, end + (-length % 4)


def message(obj: int, opcode: int, args: bytes = b"") -> bytes:
    return struct.pack(ORDER + "II", obj, (8 + len(args)) << 16 | opcode) + args


def uints(*values: int) -> bytes:
    return struct.pack(ORDER + "I" * len(values), *values)


def socket_path(environ: dict[str, str]) -> Path:
    """The compositor's socket: $WAYLAND_DISPLAY (absolute, or in $XDG_RUNTIME_DIR); without it
    (a systemd user unit that did not get the session's environment), the only `wayland-N`
    socket in $XDG_RUNTIME_DIR. OSError when there is none to use."""
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    name = environ.get("WAYLAND_DISPLAY", "")
    if name:
        path = Path(name) if name.startswith("/") else Path(runtime) / name
        if not runtime and not name.startswith("/"):
            raise OSError("WAYLAND_DISPLAY is set but XDG_RUNTIME_DIR is not")
        return path
    if not runtime:
        raise OSError("not a Wayland session: neither WAYLAND_DISPLAY nor XDG_RUNTIME_DIR is set")
    sockets = sorted(p for p in Path(runtime).glob("wayland-[0-9]*") if not p.name.endswith(".lock"))
    if len(sockets) != 1:
        raise OSError(f"no WAYLAND_DISPLAY, and {len(sockets)} wayland sockets in {runtime}")
    return sockets[0]


class IdleWatch:
    """A connection to the compositor with one idle notification of `timeout_ms`.

    `start()` binds the globals and asks for the notification (OSError when the compositor
    has no ext-idle-notify-v1); then a reader task follows the events. Version 2's
    get_input_idle_notification is preferred: it ignores idle inhibitors, so a video playing
    on the projector does not make the pupils' absence "active".
    """

    def __init__(self, path: Path, timeout_ms: int, clock: Monotonic = time.monotonic) -> None:
        self.path, self.timeout_ms, self.clock = path, timeout_ms, clock
        self.idle = False
        self.idled_at: float | None = None
        self.resumes = 0                 # resumed events so far
        self.started_at: float | None = None
        self.closed: str | None = None   # why the connection ended
        self.version = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_id = 2
        self._notification = 0

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    async def _read(self) -> tuple[int, int, bytes]:
        assert self._reader is not None
        header = await self._reader.readexactly(8)
        obj, word = struct.unpack(ORDER + "II", header)
        size, opcode = word >> 16, word & 0xFFFF
        if size < 8:
            raise ParseError(f"wayland: message of {size} bytes")
        return obj, opcode, await self._reader.readexactly(size - 8)

    async def _roundtrip(self, collect: dict[str, tuple[int, int]] | None = None, registry: int = 0) -> None:
        """wl_display.sync and read until its callback is done: the compositor has handled
        everything sent before. Globals met on the way go into `collect`."""
        assert self._writer is not None
        done = self._new_id()
        self._writer.write(message(DISPLAY, DISPLAY_SYNC, uints(done)))
        while True:
            obj, opcode, body = await self._read()
            if obj == registry and opcode == REGISTRY_GLOBAL and collect is not None:
                (name,) = struct.unpack_from(ORDER + "I", body)
                interface, end = unpack_string(body, 4)
                (version,) = struct.unpack_from(ORDER + "I", body, end)
                collect.setdefault(interface, (name, version))
            elif obj == DISPLAY and opcode == DISPLAY_ERROR:
                raise OSError(f"the compositor refused: {unpack_string(body, 8)[0]}")
            elif obj == done and opcode == CALLBACK_DONE:
                return

    async def start(self, timeout_s: float = 3.0) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                self._reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                registry = self._new_id()
                self._writer.write(message(DISPLAY, DISPLAY_GET_REGISTRY, uints(registry)))
                found: dict[str, tuple[int, int]] = {}
                await self._roundtrip(found, registry)
                if NOTIFIER not in found or SEAT not in found:
                    raise OSError(f"the compositor has no {NOTIFIER} (GNOME: use the mutter source)")
                seat, notifier = self._new_id(), self._new_id()
                self.version = min(2, found[NOTIFIER][1])
                self._notification = self._new_id()
                ask = NOTIFIER_GET_INPUT_IDLE_NOTIFICATION if self.version >= 2 else NOTIFIER_GET_IDLE_NOTIFICATION
                self._writer.write(
                    message(registry, REGISTRY_BIND, uints(found[SEAT][0]) + pack_string(SEAT) + uints(1, seat)) +
                    message(registry, REGISTRY_BIND, uints(found[NOTIFIER][0]) + pack_string(NOTIFIER) +
                            uints(self.version, notifier)) +
                    message(notifier, ask, uints(self._notification, self.timeout_ms, seat)))
                await self._roundtrip()  # a refusal (a protocol error) shows here, not later
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            await self.aclose()
            raise OSError(f"the compositor closed the connection: {e}") from None
        except BaseException:
            await self.aclose()
            raise
        self.started_at = self.clock()
        self._task = asyncio.create_task(self._follow(), name="wayland-idle")

    async def _follow(self) -> None:
        try:
            while True:
                obj, opcode, body = await self._read()
                if obj == self._notification and opcode == NOTIFICATION_IDLED:
                    self.idle, self.idled_at = True, self.clock()
                elif obj == self._notification and opcode == NOTIFICATION_RESUMED:
                    self.idle = False
                    self.resumes += 1
                elif obj == DISPLAY and opcode == DISPLAY_ERROR:
                    self.closed = f"the compositor reported an error: {unpack_string(body, 8)[0]}"
                    return
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ParseError) as e:
            self.closed = f"the compositor closed the connection ({type(e).__name__})"

    async def aclose(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None
