"""A Wayland compositor as far as ext-idle-notify-v1 goes, over a real Unix socket, for tests.

It speaks the documented wire format (wayland.freedesktop.org, "Wire Format"): it answers
wl_display.get_registry with its globals and wl_display.sync with wl_callback.done, records
the binds and idle notifications a client asks for, and lets the test send `idled`,
`resumed` or a protocol error, or hang up, as a compositor would.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from pathlib import Path

from tice_agent.probes._wayland import ORDER, message, pack_string, uints, unpack_string


@dataclass
class Notification:
    id: int
    timeout_ms: int
    input_only: bool  # get_input_idle_notification (v2): inhibitors ignored


@dataclass
class Compositor:
    path: Path
    idle_notify_version: int | None = 2  # None: no ext_idle_notifier_v1 global (Mutter)
    binds: list[tuple[str, int]] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Compositor:
        self._server = await asyncio.start_unix_server(self._client, str(self.path))
        return self

    async def close(self) -> None:
        """Hang up on every client and wait for their handlers to end."""
        self.hang_up()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=30)

    def hang_up(self) -> None:
        for w in self._writers:
            w.close()
        self._writers.clear()

    def _send(self, data: bytes) -> None:
        for w in self._writers:
            w.write(data)

    def idled(self) -> None:
        for n in self.notifications:
            self._send(message(n.id, 0))

    def resumed(self) -> None:
        for n in self.notifications:
            self._send(message(n.id, 1))

    def error(self, text: str) -> None:
        self._send(message(1, 0, uints(1, 0) + pack_string(text)))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
            me.add_done_callback(self._handlers.discard)
        self._writers.append(writer)
        globals_ = [(1, "wl_compositor", 6), (2, "wl_seat", 9), (3, "wl_output", 4)]
        if self.idle_notify_version is not None:
            globals_.append((4, "ext_idle_notifier_v1", self.idle_notify_version))
        names = {name: interface for name, interface, _ in globals_}
        interfaces: dict[int, str] = {1: "wl_display"}
        try:
            while True:
                obj, word = struct.unpack(ORDER + "II", await reader.readexactly(8))
                body = await reader.readexactly((word >> 16) - 8)
                opcode = word & 0xFFFF
                kind = interfaces.get(obj)
                if kind == "wl_display" and opcode == 1:  # get_registry
                    (registry,) = struct.unpack(ORDER + "I", body)
                    interfaces[registry] = "wl_registry"
                    for name, interface, version in globals_:
                        writer.write(message(registry, 0, uints(name) + pack_string(interface) + uints(version)))
                elif kind == "wl_display" and opcode == 0:  # sync
                    (callback,) = struct.unpack(ORDER + "I", body)
                    writer.write(message(callback, 0, uints(1)))
                elif kind == "wl_registry" and opcode == 0:  # bind
                    (name,) = struct.unpack_from(ORDER + "I", body)
                    interface, end = unpack_string(body, 4)
                    version, new_id = struct.unpack_from(ORDER + "II", body, end)
                    assert names[name] == interface, (name, interface)
                    interfaces[new_id] = interface
                    self.binds.append((interface, version))
                elif kind == "ext_idle_notifier_v1" and opcode in (1, 2):  # get_(input_)idle_notification
                    new_id, timeout_ms, seat = struct.unpack(ORDER + "III", body)
                    assert interfaces.get(seat) == "wl_seat"
                    interfaces[new_id] = "ext_idle_notification_v1"
                    self.notifications.append(Notification(new_id, timeout_ms, opcode == 2))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
