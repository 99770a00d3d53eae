"""network: is the link up, on which kind of interface, can we reach the collector and DNS?

The interface is the one that carries the traffic, found in this order:
1. the route to the collector: the kernel's choice of source address for it (a UDP socket
   "connected" to the collector's address sends nothing), mapped to its interface by psutil's
   `net_if_addrs()`. It follows IPv4 or IPv6, policy routing and VPNs, on every OS;
2. Linux, when there is no collector address (not configured, DNS down): the IPv4 default
   route (`/proc/net/route`, lowest metric), else the IPv6 default route (`::/0` in
   `/proc/net/ipv6_route`, lowest metric; the kernel's `lo` reject route, which only means
   "unreachable", is not one). An IPv6-only school network has no IPv4 default route at all;
3. elsewhere, or when the route tables cannot be read: psutil's `net_if_stats()`, the first
   interface that is up and not a loopback.
On Linux its kind comes from sysfs `/sys/class/net/<if>`: `uevent` DEVTYPE (wlan, wwan), a
`wireless` directory, the ARPHRD `type` (1 ethernet, 512 PPP, 519 raw IP), the driver (a HiLink
3G key is a USB network card on cdc_ether or rndis_host), and `operstate`; elsewhere from its
name and `net_if_stats()`.

Reachability is a TCP connect to the collector, timed from after name resolution, so the
round-trip time is the network's, not the resolver's. An unreachable collector is a record
with `collector_reachable = false`, never an exception. DNS is checked separately on a
configured name, to tell "DNS is broken" from "the collector is down".
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from tice_agent.probes import register
from tice_agent.probes._run import Now, ParseError, excerpt, utc_now
from tice_wire import Link, Record

log = logging.getLogger("tice.agent.probes.network")

Resolver = Callable[[str], Awaitable[Any]]
InterfaceStats = Callable[[], dict[str, Any]]  # psutil.net_if_stats
InterfaceAddrs = Callable[[], dict[str, list[Any]]]  # psutil.net_if_addrs
LocalAddress = Callable[[int, str, int], str]  # (family, collector address, port) -> our source address

# Drivers of USB modems and of 3G keys in "HiLink" mode (a USB network card behind a router).
CELLULAR_DRIVERS = ("cdc_ether", "rndis_host", "huawei_cdc_ncm", "qmi_wwan", "cdc_mbim", "sierra_net", "option")
ARPHRD_ETHER, ARPHRD_PPP, ARPHRD_RAWIP, ARPHRD_NONE = 1, 512, 519, 65534
RTF_UP, RTF_REJECT = 0x0001, 0x0200  # route flags (linux/route.h, linux/ipv6_route.h)


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


def parse_proc_net_ipv6_route(text: str) -> str | None:
    """The interface of the IPv6 default route (`::/0`, up, not a reject route, not `lo`),
    lowest metric first; None when there is none.

    Each line: destination, its prefix length, source, its prefix length, next hop, metric,
    reference count, use count, flags and interface, in hexadecimal (net/ipv6/route.c).
    """
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 10 or len(fields[0]) != 32:
            raise ParseError(f"/proc/net/ipv6_route: expected 10 fields, got {excerpt(line)}")
        dest, plen, metric, flags, iface = fields[0], fields[1], fields[5], fields[8], fields[9]
        try:
            metric_n, flags_n = int(metric, 16), int(flags, 16)
        except ValueError:
            raise ParseError(f"/proc/net/ipv6_route: metric or flags not hexadecimal: {excerpt(line)}") from None
        default = dest == "0" * 32 and plen == "00"
        if default and flags_n & RTF_UP and not flags_n & RTF_REJECT and iface != "lo" \
                and (best is None or metric_n < best[0]):
            best = (metric_n, iface)
    return best[1] if best else None


def interface_of(local: str, addrs: dict[str, list[Any]]) -> str | None:
    """The interface holding the local address `local` ("fe80::1%wlp2s0" matches "fe80::1")."""
    want = ipaddress.ip_address(local.split("%")[0])
    for name, entries in sorted(addrs.items()):
        for entry in entries:
            try:
                if ipaddress.ip_address(str(entry.address).split("%")[0]) == want:
                    return name
            except ValueError:  # a MAC address (AF_PACKET/AF_LINK entry)
                continue
    return None


def _udp_source_address(family: int, address: str, port: int) -> str:
    """The source address the kernel picks to reach address:port. A UDP connect() only
    looks up the route: no packet is sent."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((address, port))
        return str(s.getsockname()[0])


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
    Tests inject `proc_root`, `sys_root`, `resolver`, `if_stats`, `if_addrs`, `local_address`
    and `now`.
    """

    name = "network"
    interval_s = 60.0

    def __init__(self, *, interval_s: float = 60.0, collector: str = "", dns_name: str = "",
                 connect_timeout_s: float = 3.0, cellular_drivers: Sequence[str] = CELLULAR_DRIVERS,
                 proc_root: str = "/proc", sys_root: str = "/sys", resolver: Resolver = _getaddrinfo,
                 if_stats: InterfaceStats = psutil.net_if_stats, if_addrs: InterfaceAddrs = psutil.net_if_addrs,
                 local_address: LocalAddress = _udp_source_address, now: Now = utc_now) -> None:
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
        self._resolve, self._if_stats, self._if_addrs, self._local_address = resolver, if_stats, if_addrs, local_address
        self._now = now

    def interface(self, collector: tuple[int, str] | None = None) -> tuple[str, bool]:
        """(kind, link up) of the interface that carries the traffic; `collector` is the
        collector's resolved (family, address), when there is one."""
        iface = self._route_to(collector) if collector else None
        linux = (self.proc / "net" / "route").exists()
        if iface is None and linux:
            iface = self._default_route()
            if iface is None:
                return "none", False
        if iface is None or not linux:
            return self._interface_from_stats(iface)
        return self._linux_kind(iface)

    def _route_to(self, collector: tuple[int, str]) -> str | None:
        family, address = collector
        port = self.target[1] if self.target else 443
        try:
            local = self._local_address(family, address, port)
            if ipaddress.ip_address(local.split("%")[0]).is_loopback:
                return None  # a collector on this machine says nothing about the network
            return interface_of(local, self._if_addrs())
        except (OSError, ValueError) as e:  # no route at all (network down), odd address
            log.debug("no route to the collector %s: %s", address, e)
            return None

    def _default_route(self) -> str | None:
        """IPv4 default route, else IPv6; a table that cannot be read or parsed counts as none."""
        for table, parse in (("route", parse_proc_net_route), ("ipv6_route", parse_proc_net_ipv6_route)):
            text = _read(self.proc / "net" / table)
            if text is None:  # IPv6 disabled: no ipv6_route file
                continue
            try:
                iface = parse(text)
            except ParseError as e:
                log.warning("network: %s", e)
                continue
            if iface is not None:
                return iface
        return None

    def _linux_kind(self, iface: str) -> tuple[str, bool]:
        base = self.sys / "class" / "net" / iface
        arphrd = (_read(base / "type") or "").strip()
        try:
            uevent = parse_uevent(_read(base / "uevent") or "")
        except ParseError as e:  # the other facts still tell the kind
            log.debug("network: %s: %s", iface, e)
            uevent = {}
        try:
            driver = os.path.basename(os.readlink(base / "device" / "driver"))
        except OSError:
            driver = ""
        kind = interface_kind(iface, int(arphrd) if arphrd.isdigit() else None, wireless=(base / "wireless").is_dir(),
                              devtype=uevent.get("DEVTYPE", ""), driver=driver, cellular_drivers=self.cellular_drivers)
        # PPP and some modem drivers report "unknown" while carrying traffic; with a route
        # through it, only an explicit "down"/"dormant" means the link is down.
        state = (_read(base / "operstate") or "unknown").strip()
        return kind, state in ("up", "unknown")

    def _interface_from_stats(self, iface: str | None = None) -> tuple[str, bool]:
        try:
            stats = self._if_stats()
        except OSError:
            return "none", False
        if iface is not None and iface in stats:
            return kind_from_name(iface), bool(stats[iface].isup)
        for name, st in sorted(stats.items()):
            if st.isup and "loopback" not in name.lower() and not name.startswith("lo"):
                return kind_from_name(name), True
        return "none", False

    async def _resolve_collector(self) -> tuple[int, str] | None:
        """The collector's first address as (family, address); None when unset or unresolvable."""
        if self.target is None:
            return None
        host, port = self.target
        try:
            # asyncio.timeout, never wait_for: on 3.11 wait_for can swallow the cancellation
            # that stops the agent, and this probe would then run on after SIGTERM.
            async with asyncio.timeout(self.connect_timeout_s):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            return int(infos[0][0]), str(infos[0][4][0])
        except (OSError, TimeoutError, IndexError, UnicodeError):
            return None

    async def _reach(self, address: str | None) -> tuple[bool | None, float | None]:
        if self.target is None:
            return None, None
        if address is None:  # the name did not resolve
            return False, None
        port = self.target[1]
        started = time.perf_counter()  # after resolution: the timing is the network's, not DNS's
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, writer = await asyncio.open_connection(address, port)
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
            async with asyncio.timeout(self.connect_timeout_s):
                answer = await self._resolve(self.dns_name)
        except (OSError, TimeoutError, UnicodeError):
            return False
        return bool(answer)

    async def collect(self) -> list[Record]:
        at = self._now()
        collector, dns_ok = await asyncio.gather(self._resolve_collector(), self._dns())
        kind, up = self.interface(collector)
        reachable, rtt = await self._reach(collector[1] if collector else None)
        return [Link(seq=0, at=at, interface=kind, link_up=up and kind != "none",  # type: ignore[arg-type]
                     collector_reachable=reachable, rtt_s=rtt, dns_ok=dns_ok)]
