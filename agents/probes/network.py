"""network: is the link up, on which kind of interface, can we reach the collector and DNS?

Linux: the interface is the one of the default route (`/proc/net/route`, lowest metric); its
kind comes from sysfs `/sys/class/net/<if>`: `uevent` DEVTYPE (wlan, wwan), a `wireless`
directory, the ARPHRD `type` (1 ethernet, 512 PPP, 519 raw IP), the driver (a HiLink 3G key is
a USB network card on cdc_ether or rndis_host), and `operstate`. Elsewhere (Windows), psutil's
`net_if_stats()`: the first interface that is up and not a loopback, its kind from its name.

Reachability is a TCP connect to the collector, timed from after name resolution, so the
round-trip time is the network's, not the resolver's. An unreachable collector is a record
with `collector_reachable = false`, never an exception. DNS is checked separately on a
configured name, to tell "DNS is broken" from "the collector is down".
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from agents.probes import register
from agents.probes._run import Now, ParseError, excerpt, utc_now
from collector.wire import Link, Record

Resolver = Callable[[str], Awaitable[Any]]
InterfaceStats = Callable[[], dict[str, Any]]  # psutil.net_if_stats

# Drivers of USB modems and of 3G keys in "HiLink" mode (a USB network card behind a router).
CELLULAR_DRIVERS = ("cdc_ether", "rndis_host", "huawei_cdc_ncm", "qmi_wwan", "cdc_mbim", "sierra_net", "option")
ARPHRD_ETHER, ARPHRD_PPP, ARPHRD_RAWIP, ARPHRD_NONE = 1, 512, 519, 65534


def parse_proc_net_route(text: str) -> str | None:
    """The interface of the default route (destination 00000000, flag RTF_UP), or None."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Iface"):
        raise ParseError(f"/proc/net/route: expected the header 'Iface ...', got {excerpt(text)}")
    best: tuple[int, str] | None = None
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 7:
            raise ParseError(f"/proc/net/route: short line {excerpt(line)}")
        iface, dest, flags, metric = fields[0], fields[1], fields[3], fields[6]
        try:
            up = int(flags, 16) & 0x1
        except ValueError:
            raise ParseError(f"/proc/net/route: flags not hexadecimal: {excerpt(flags, 20)}") from None
        if not metric.isdigit():
            raise ParseError(f"/proc/net/route: metric not a number: {excerpt(metric, 20)}")
        if dest == "00000000" and up and (best is None or int(metric) < best[0]):
            best = (int(metric), iface)
    return best[1] if best else None


_UEVENT_KEY = re.compile(r"[A-Z][A-Z0-9_]*")


def parse_uevent(text: str) -> dict[str, str]:
    """`KEY=value` lines of a sysfs uevent file -> dict."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not _UEVENT_KEY.fullmatch(key):
            raise ParseError(f"uevent: expected KEY=value, got {excerpt(line)}")
        out[key] = value.strip()
    return out


def interface_kind(name: str, arphrd_type: int | None, *, wireless: bool = False, devtype: str = "",
                   driver: str = "", cellular_drivers: Sequence[str] = CELLULAR_DRIVERS) -> str:
    """The wire's interface kind from what sysfs says about one interface."""
    if devtype == "wlan" or wireless:
        return "wifi"
    if devtype == "wwan" or driver in cellular_drivers or arphrd_type in (ARPHRD_PPP, ARPHRD_RAWIP):
        return "cellular"
    if name.startswith(("ww", "ppp", "usb")):  # the kernel's names for modems and USB network cards
        return "cellular"
    if arphrd_type == ARPHRD_ETHER:
        return "ethernet"
    return "other"  # tun/tap (a VPN), bridges without a type, ...


def kind_from_name(name: str) -> str:
    """Interface kind from a Windows (or macOS) interface name, for want of sysfs."""
    low = name.lower()
    if any(w in low for w in ("wi-fi", "wifi", "wlan", "wireless")):
        return "wifi"
    if any(w in low for w in ("cellular", "mobile", "wwan", "huawei", "modem")):
        return "cellular"
    if any(w in low for w in ("ethernet", "eth", "local area connection")) or low.startswith("en"):
        return "ethernet"
    return "other"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


async def _getaddrinfo(host: str) -> Any:
    return await asyncio.get_running_loop().getaddrinfo(host, None)


@register("network")
class NetworkProbe:
    """One `Link` record per collect.

    Options: `interval_s` (60), `collector` ("host:port" to time a TCP connect to; the agent
    fills in the enrolled collector; "" = no reachability check), `dns_name` (a name to
    resolve; "" = no DNS check), `connect_timeout_s` (3, per check), `cellular_drivers`.
    Tests inject `proc_root`, `sys_root`, `resolver`, `if_stats` and `now`.
    """

    name = "network"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, collector: str = "", dns_name: str = "",
                 connect_timeout_s: float = 3.0, cellular_drivers: Sequence[str] = CELLULAR_DRIVERS,
                 proc_root: str = "/proc", sys_root: str = "/sys", resolver: Resolver = _getaddrinfo,
                 if_stats: InterfaceStats = psutil.net_if_stats, now: Now = utc_now) -> None:
        self.interval_s = interval_s
        self.target: tuple[str, int] | None = None
        if collector:
            host, sep, port = collector.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"collector: expected host:port, got {collector!r}")
            self.target = (host.strip("[]"), int(port))
        if connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be > 0")
        self.dns_name = dns_name
        self.connect_timeout_s = connect_timeout_s
        self.cellular_drivers = tuple(cellular_drivers)
        self.proc, self.sys = Path(proc_root), Path(sys_root)
        self._resolve, self._if_stats, self._now = resolver, if_stats, now

    def interface(self) -> tuple[str, bool]:
        """(kind, link up) of the interface that carries the traffic."""
        route = _read(self.proc / "net" / "route")
        if route is None:  # not Linux
            return self._interface_from_stats()
        iface = parse_proc_net_route(route)
        if iface is None:
            return "none", False
        base = self.sys / "class" / "net" / iface
        arphrd = (_read(base / "type") or "").strip()
        uevent = parse_uevent(_read(base / "uevent") or "")
        try:
            driver = os.path.basename(os.readlink(base / "device" / "driver"))
        except OSError:
            driver = ""
        kind = interface_kind(iface, int(arphrd) if arphrd.isdigit() else None, wireless=(base / "wireless").is_dir(),
                              devtype=uevent.get("DEVTYPE", ""), driver=driver, cellular_drivers=self.cellular_drivers)
        # PPP and some modem drivers report "unknown" while carrying traffic; with a default
        # route through it, only an explicit "down"/"dormant" means the link is down.
        state = (_read(base / "operstate") or "unknown").strip()
        return kind, state in ("up", "unknown")

    def _interface_from_stats(self) -> tuple[str, bool]:
        try:
            stats = self._if_stats()
        except OSError:
            return "none", False
        for name, st in sorted(stats.items()):
            if st.isup and "loopback" not in name.lower() and not name.startswith("lo"):
                return kind_from_name(name), True
        return "none", False

    async def _reach(self) -> tuple[bool | None, float | None]:
        if self.target is None:
            return None, None
        host, port = self.target
        deadline = time.monotonic() + self.connect_timeout_s
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), self.connect_timeout_s)
            address = str(infos[0][4][0])  # connect to what was resolved: the timing excludes DNS
            started = time.perf_counter()
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port),
                                               max(0.001, deadline - time.monotonic()))
        except (OSError, TimeoutError, IndexError):
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
            answer = await asyncio.wait_for(self._resolve(self.dns_name), self.connect_timeout_s)
        except (OSError, TimeoutError, UnicodeError):
            return False
        return bool(answer)

    async def collect(self) -> list[Record]:
        at = self._now()
        kind, up = self.interface()
        (reachable, rtt), dns_ok = await asyncio.gather(self._reach(), self._dns())
        return [Link(seq=0, at=at, interface=kind, link_up=up and kind != "none",  # type: ignore[arg-type]
                     collector_reachable=reachable, rtt_s=rtt, dns_ok=dns_ok)]
