"""The network probe: IPv4 and IPv6 route tables, uevent and interface-kind parsing on captured
sysfs, the route to the collector (policy routing, Windows), an IPv6-only network, and the
collector check against a real TCP listener on 127.0.0.1 and a closed port."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent_testing import roundtrip
from tice_agent.probes._run import ParseError
from tice_agent.probes.network import (
    NetworkProbe,
    interface_kind,
    interface_of,
    kind_from_name,
    parse_proc_net_ipv6_route,
    parse_proc_net_route,
    parse_uevent,
)
from tice_wire import Link

FIX = Path(__file__).resolve().parent / "fixtures" / "network"
SYS = FIX / "sys"
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)


def fixture(name: str) -> str:
    return (FIX / name).read_text()



# ---------------------------------------------------------------- parsers

def test_default_route_lowest_metric_wins():
    assert parse_proc_net_route(fixture("route-wifi.txt")) == "wlp2s0"  # 600 beats the 3G key's 700
    assert parse_proc_net_route(fixture("route-hilink.txt")) == "enx0c5b8f279a64"
    assert parse_proc_net_route(fixture("route-no-default.txt")) is None


@pytest.mark.parametrize(("name", "message"), [
    ("route-garbage.txt", "expected the header 'Iface ...', got 'this is not a routing table'"),
    ("route-empty.txt", "expected the header"),
    ("route-bad-metric.txt", "metric not a number: 'six'"),
])
def test_route_garbage_is_a_parse_error(name, message):
    with pytest.raises(ParseError, match=message):
        parse_proc_net_route(fixture(name))


def test_ipv6_default_route():
    assert parse_proc_net_ipv6_route(fixture("ipv6_route-wifi.txt")) == "wlp2s0"  # 0x258 beats wwan0's 0x2bc
    # Only link-local routes and the kernel's "unreachable" reject route on lo: no default.
    assert parse_proc_net_ipv6_route(fixture("ipv6_route-no-default.txt")) is None
    assert parse_proc_net_ipv6_route("") is None


@pytest.mark.parametrize(("name", "message"), [
    ("ipv6_route-garbage.txt", "expected 10 fields, got 'ipv6 is = not a table'"),
    ("ipv6_route-bad-metric.txt", "metric or flags not hexadecimal"),
])
def test_ipv6_route_garbage_is_a_parse_error(name, message):
    with pytest.raises(ParseError, match=message):
        parse_proc_net_ipv6_route(fixture(name))


def test_interface_of_a_local_address():
    addrs = {"enp3s0": [SimpleNamespace(address="0c:5b:8f:27:9a:64"), SimpleNamespace(address="192.168.2.7")],
             "wlp2s0": [SimpleNamespace(address="2001:db8:1::23"), SimpleNamespace(address="fe80::23%wlp2s0")]}
    assert interface_of("192.168.2.7", addrs) == "enp3s0"
    assert interface_of("2001:0db8:0001::0023", addrs) == "wlp2s0"
    assert interface_of("fe80::23%3", addrs) == "wlp2s0"
    assert interface_of("10.0.0.1", addrs) is None


def test_uevent():
    assert parse_uevent((SYS / "class/net/wlp2s0/uevent").read_text()) == {
        "DEVTYPE": "wlan", "INTERFACE": "wlp2s0", "IFINDEX": "3"}
    assert parse_uevent("") == {}
    with pytest.raises(ParseError, match="expected KEY=value, got 'this is = not a uevent'"):
        parse_uevent((SYS / "class/net/eth9/uevent").read_text())


@pytest.mark.parametrize(("args", "kwargs", "kind"), [
    (("wlp2s0", 1), {"devtype": "wlan"}, "wifi"),
    (("wlan0", 1), {"wireless": True}, "wifi"),
    (("wwan0", 65534), {"devtype": "wwan"}, "cellular"),
    (("enx0c5b8f279a64", 1), {"driver": "cdc_ether"}, "cellular"),  # a HiLink 3G key
    (("ppp0", 512), {}, "cellular"),
    (("usb0", 1), {}, "cellular"),
    (("enp3s0", 1), {"driver": "r8169"}, "ethernet"),
    (("enx0c5b8f279a64", 1), {"driver": "cdc_ether", "cellular_drivers": ()}, "ethernet"),
    (("tun0", 65534), {"devtype": "tun"}, "other"),  # a VPN
    (("br0", None), {}, "other"),
])
def test_interface_kind(args, kwargs, kind):
    assert interface_kind(*args, **kwargs) == kind


@pytest.mark.parametrize(("name", "kind"), [
    ("Wi-Fi", "wifi"), ("Ethernet 2", "ethernet"), ("Cellular", "cellular"), ("vEthernet (WSL)", "ethernet"),
    ("Bluetooth Network Connection", "other"),
])
def test_kind_from_windows_names(name, kind):
    assert kind_from_name(name) == kind


# ---------------------------------------------------------------- the probe

def proc_with_route(tmp_path: Path, route: str, ipv6_route: str | None = None) -> str:
    (tmp_path / "net").mkdir(exist_ok=True)
    (tmp_path / "net" / "route").write_text(fixture(route))
    if ipv6_route:
        (tmp_path / "net" / "ipv6_route").write_text(fixture(ipv6_route))
    return str(tmp_path)


@pytest.mark.parametrize(("route", "ipv6_route", "interface", "up"), [
    # IPv6-only: /proc/net/route holds only its header; the default route is ::/0 on the Wi-Fi.
    ("route-header-only.txt", "ipv6_route-wifi.txt", "wifi", True),
    ("route-header-only.txt", "ipv6_route-no-default.txt", "none", False),
    ("route-ethernet.txt", "ipv6_route-wifi.txt", "ethernet", False),  # IPv4 default first
    # A garbled IPv4 table does not cost the record: the IPv6 one still answers.
    ("route-garbage.txt", "ipv6_route-wifi.txt", "wifi", True),
])
async def test_ipv6_default_route_when_there_is_no_ipv4_one(tmp_path, route, ipv6_route, interface, up):
    probe = NetworkProbe(proc_root=proc_with_route(tmp_path, route, ipv6_route), sys_root=str(SYS), now=lambda: NOW)
    [rec] = roundtrip(await probe.collect())
    assert (rec.interface, rec.link_up) == (interface, up)


async def test_ipv6_only_school_with_a_collector_that_answers(tmp_path):
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = NetworkProbe(collector=f"127.0.0.1:{port}", sys_root=str(SYS),
                             proc_root=proc_with_route(tmp_path, "route-header-only.txt", "ipv6_route-wifi.txt"))
        [rec] = roundtrip(await probe.collect())
    finally:
        server.close()
        await server.wait_closed()
    assert (rec.interface, rec.link_up, rec.collector_reachable) == ("wifi", True, True)


ADDRS = {"enp3s0": [SimpleNamespace(address="192.168.2.7")], "wlp2s0": [SimpleNamespace(address="2001:db8:1::23")],
         "lo": [SimpleNamespace(address="127.0.0.1")]}


async def test_the_route_to_the_collector_wins_over_the_default_route(tmp_path):
    asked = []

    def source_address(family, address, port):
        asked.append((family, address, port))
        return "2001:db8:1::23"  # the kernel routes the collector through the Wi-Fi (policy routing)

    probe = NetworkProbe(collector="[2001:db8:99::1]:8443", proc_root=proc_with_route(tmp_path, "route-ethernet.txt"),
                         sys_root=str(SYS), if_addrs=lambda: ADDRS, local_address=source_address, connect_timeout_s=0.5)
    [rec] = roundtrip(await probe.collect())
    assert asked == [(socket.AF_INET6, "2001:db8:99::1", 8443)]
    assert (rec.interface, rec.link_up, rec.collector_reachable) == ("wifi", True, False)


async def test_no_route_to_the_collector_falls_back_to_the_default_route(tmp_path):
    def unreachable(family, address, port):
        raise OSError(101, "Network is unreachable")

    probe = NetworkProbe(collector="192.0.2.1:443", proc_root=proc_with_route(tmp_path, "route-ethernet.txt"),
                         sys_root=str(SYS), if_addrs=lambda: ADDRS, local_address=unreachable, connect_timeout_s=0.3)
    [rec] = roundtrip(await probe.collect())
    assert (rec.interface, rec.link_up) == ("ethernet", False)


async def test_windows_names_the_interface_that_carries_the_traffic(tmp_path):
    # No /proc: a host-only adapter that is up sorts first, but the collector is reached by Wi-Fi.
    stats = {"Ethernet 2": SimpleNamespace(isup=True), "Wi-Fi": SimpleNamespace(isup=True)}
    addrs = {"Ethernet 2": [SimpleNamespace(address="192.168.56.1")], "Wi-Fi": [SimpleNamespace(address="10.4.0.23")]}
    probe = NetworkProbe(collector="192.0.2.1:443", proc_root=str(tmp_path), if_stats=lambda: stats,
                         if_addrs=lambda: addrs, local_address=lambda f, a, p: "10.4.0.23", connect_timeout_s=0.3)
    [rec] = roundtrip(await probe.collect())
    assert (rec.interface, rec.link_up) == ("wifi", True)


async def test_a_garbled_uevent_does_not_cost_the_record(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(fixture("route-ethernet.txt").replace("enp3s0", "eth9"))
    [rec] = roundtrip(await NetworkProbe(proc_root=str(tmp_path), sys_root=str(SYS)).collect())
    assert (rec.interface, rec.link_up) == ("ethernet", True)  # ARPHRD type 1, operstate up


@pytest.mark.parametrize(("route", "interface", "up"), [
    ("route-wifi.txt", "wifi", True),
    ("route-hilink.txt", "cellular", True),
    ("route-ethernet.txt", "ethernet", False),  # operstate "down"
    ("route-no-default.txt", "none", False),
])
async def test_interface_of_the_default_route(tmp_path, route, interface, up):
    probe = NetworkProbe(proc_root=proc_with_route(tmp_path, route), sys_root=str(SYS), now=lambda: NOW)
    [rec] = roundtrip(await probe.collect())
    assert isinstance(rec, Link)
    assert (rec.interface, rec.link_up, rec.collector_reachable, rec.rtt_s, rec.dns_ok) == (interface, up, None,
                                                                                           None, None)
    assert rec.at == NOW and rec.seq == 0


async def test_without_proc_net_route_psutil_names_the_interface(tmp_path):
    stats = {"Loopback Pseudo-Interface 1": SimpleNamespace(isup=True),
             "Ethernet": SimpleNamespace(isup=False), "Wi-Fi": SimpleNamespace(isup=True)}
    probe = NetworkProbe(proc_root=str(tmp_path), if_stats=lambda: stats)
    [rec] = roundtrip(await probe.collect())
    assert (rec.interface, rec.link_up) == ("wifi", True)
    [rec] = await NetworkProbe(proc_root=str(tmp_path), if_stats=dict).collect()
    assert (rec.interface, rec.link_up) == ("none", False)


async def resolver(name: str):
    if name == "collector.ecoles.example":
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.10", 0))]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def test_a_listening_collector_is_reachable_with_a_round_trip_time(tmp_path):
    accepted = asyncio.Event()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = NetworkProbe(collector=f"127.0.0.1:{port}", dns_name="collector.ecoles.example", resolver=resolver,
                             proc_root=proc_with_route(tmp_path, "route-wifi.txt"), sys_root=str(SYS))
        [rec] = roundtrip(await probe.collect())
        await asyncio.wait_for(accepted.wait(), 2)
    finally:
        server.close()
        await server.wait_closed()
    assert rec.collector_reachable is True and 0 < rec.rtt_s < 1 and rec.dns_ok is True
    assert (rec.interface, rec.link_up) == ("wifi", True)


async def test_a_closed_port_is_data_not_an_exception(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = NetworkProbe(collector=f"127.0.0.1:{port}", dns_name="nowhere.invalid", resolver=resolver,
                         connect_timeout_s=1, proc_root=proc_with_route(tmp_path, "route-wifi.txt"), sys_root=str(SYS))
    [rec] = roundtrip(await probe.collect())
    assert (rec.collector_reachable, rec.rtt_s, rec.dns_ok) == (False, None, False)


async def test_a_silent_collector_times_out_as_unreachable():
    async def never(name: str):
        await asyncio.sleep(10)

    # 192.0.2.0/24 (TEST-NET-1) is never routed: the connect hangs or fails, both unreachable.
    probe = NetworkProbe(collector="192.0.2.1:443", dns_name="slow.example", resolver=never, connect_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    [rec] = roundtrip(await probe.collect())
    assert (rec.collector_reachable, rec.rtt_s, rec.dns_ok) == (False, None, False)
    assert loop.time() - started < 1.5


@pytest.mark.parametrize("bad", ["no-port", "host:", ":443", "host:http", "host:70000"])
def test_collector_option_must_be_host_and_port(bad):
    with pytest.raises(ValueError, match="expected host:port"):
        NetworkProbe(collector=bad)


def test_options():
    probe = NetworkProbe(interval_s=30, collector="[2001:db8::1]:8443", dns_name="ac-dijon.fr")
    assert (probe.interval_s, probe.target, probe.dns_name) == (30, ("2001:db8::1", 8443), "ac-dijon.fr")
    with pytest.raises(ValueError, match="connect_timeout_s"):
        NetworkProbe(connect_timeout_s=0)


async def test_a_cancellation_as_the_collector_answers_stops_the_probe(tmp_path, monkeypatch):
    """SIGTERM cancels the probe. On 3.11, asyncio.wait_for returns the result instead when the
    connection completes in the same loop turn as the cancellation, and the network probe then
    ran on after the agent was told to stop: the checks use asyncio.timeout."""
    loop = asyncio.get_running_loop()
    connected = loop.create_future()
    asked = asyncio.Event()

    def open_connection(host, port):
        asked.set()
        return connected

    monkeypatch.setattr(asyncio, "open_connection", open_connection)
    probe = NetworkProbe(collector="127.0.0.1:443", proc_root=proc_with_route(tmp_path, "route-wifi.txt"),
                         sys_root=str(SYS))
    task = asyncio.create_task(probe.collect())
    await asyncio.wait_for(asked.wait(), 10)
    writer = SimpleNamespace(close=lambda: None, wait_closed=lambda: asyncio.sleep(0))
    connected.set_result((None, writer))  # the collector answers...
    task.cancel()                         # ...as the agent is told to stop, in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await task
