"""network: is the link up, on which kind of interface, can we reach the collector and DNS?

The interface is the one of the default route (`/proc/net/route`); its kind comes from sysfs
(`/sys/class/net/<if>`: a `wireless` directory = wifi, ARPHRD type 512 (PPP) or a `ww*` name =
cellular, type 1 = ethernet). Reachability is a TCP connect to the collector, timed: an
unreachable collector is a record with `collector_reachable = false`, never an exception.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.probes import register
from agents.probes._run import ParseError
from collector.wire import Link, Record

Resolver = Callable[[str], Awaitable[Any]]


def parse_proc_net_route(text: str) -> str | None:
    """The interface of the default route (destination 00000000), or None."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Iface"):
        raise ParseError("expected the /proc/net/route header line 'Iface ...'")
    best: tuple[int, str] | None = None
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 7:
            raise ParseError(f"short /proc/net/route line: {line[:80]!r}")
        iface, dest, flags, metric = fields[0], fields[1], fields[3], fields[6]
        try:
            up = int(flags, 16) & 0x1
        except ValueError:
            raise ParseError(f"flags not hexadecimal: {flags[:20]!r}") from None
        if dest == "00000000" and up and metric.isdigit() and (best is None or int(metric) < best[0]):
            best = (int(metric), iface)
    return best[1] if best else None


def interface_kind(name: str, arphrd_type: str, wireless: bool) -> str:
    if wireless:
        return "wifi"
    if arphrd_type.strip() in ("512", "519", "65534") or name.startswith(("ww", "ppp", "usb")):
        return "cellular"
    if arphrd_type.strip() == "1":
        return "ethernet"
    return "other"


async def _getaddrinfo(host: str) -> Any:
    return await asyncio.get_running_loop().getaddrinfo(host, None)


@register("network")
class NetworkProbe:
    """Options: `collector` ("host:port" to time a TCP connect to; default none),
    `dns_name` (a name to resolve; default none), `timeout_s` per check (default 3)."""

    name = "network"

    def __init__(self, collector: str = "", dns_name: str = "", connect_timeout_s: float = 3.0, *,
                 proc_root: str = "/proc", sys_root: str = "/sys", resolver: Resolver = _getaddrinfo,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.target: tuple[str, int] | None = None
        if collector:
            host, sep, port = collector.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"collector: expected host:port, got {collector!r}")
            self.target = (host.strip("[]"), int(port))
        self.dns_name = dns_name
        self.connect_timeout_s = connect_timeout_s
        self.proc, self.sys = Path(proc_root), Path(sys_root)
        self._resolve, self._now = resolver, now

    def _interface(self) -> tuple[str, bool]:
        try:
            iface = parse_proc_net_route((self.proc / "net" / "route").read_text(encoding="ascii", errors="replace"))
        except OSError:
            iface = None
        if iface is None:
            return "none", False
        base = self.sys / "class" / "net" / iface
        try:
            kind_type = (base / "type").read_text(encoding="ascii")
        except OSError:
            kind_type = ""
        try:
            up = (base / "operstate").read_text(encoding="ascii").strip() in ("up", "unknown")
        except OSError:
            up = True  # a default route through it exists
        return interface_kind(iface, kind_type, (base / "wireless").exists()), up

    async def _reach(self) -> tuple[bool | None, float | None]:
        if self.target is None:
            return None, None
        started = time.perf_counter()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self.target), self.connect_timeout_s)
        except (OSError, TimeoutError):
            return False, None
        rtt = time.perf_counter() - started
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return True, round(rtt, 4)

    async def _dns(self) -> bool | None:
        if not self.dns_name:
            return None
        try:
            await asyncio.wait_for(self._resolve(self.dns_name), self.connect_timeout_s)
            return True
        except (OSError, TimeoutError, socket.gaierror):
            return False

    async def collect(self) -> list[Record]:
        at = self._now()
        kind, up = self._interface()
        (reachable, rtt), dns_ok = await asyncio.gather(self._reach(), self._dns())
        return [Link(seq=0, at=at, interface=kind, link_up=up and kind != "none",  # type: ignore[arg-type]
                     collector_reachable=reachable, rtt_s=rtt, dns_ok=dns_ok)]
