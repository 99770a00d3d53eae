"""The disk probe: smartctl -j -a parsed from captured answers (USB bridges that need -d sat, no
SMART, failing, NVMe, permission denied, old smartctl), USB disks found in a captured sysfs tree,
and the probe's records: identity, capacity, free space, health, and the disks remembered absent."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from agent_testing import roundtrip
from tice_agent.probes._identity import peripheral_id
from tice_agent.probes._run import DeviceErrors, ParseError, run_cmd_status
from tice_agent.probes.disk import DiskProbe, free_bytes, parse_smartctl, parse_udev, scan_sysfs

FIX = Path(__file__).resolve().parent / "fixtures" / "disk"
SALT = "d1" * 32
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)


def fixture(name: str) -> str:
    return (FIX / name).read_text()


# ---------------------------------------------------------------- parsers

def test_a_usb_disk_read_through_sat():
    s = parse_smartctl(fixture("usb-sat-ok.json"))
    assert (s.exit_status, s.opened, s.needs_sat, s.protocol) == (0, True, False, "ATA")
    assert (s.model, s.serial, s.capacity_bytes) == ("WDC WD20SDRW-11VUUS0", "WD-WX21A19ABCDE", 2000398934016)
    assert (s.smart_ok, s.power_on_hours, s.temperature_c) == (True, 1523, 31.0)


def test_bridges_that_need_sat():
    unknown = parse_smartctl(fixture("usb-unknown-bridge.json"))
    assert not unknown.opened and unknown.needs_sat and unknown.serial is None
    scsi = parse_smartctl(fixture("usb-scsi-no-smart.json"))
    assert scsi.opened and scsi.needs_sat and scsi.smart_ok is None
    assert (scsi.model, scsi.serial, scsi.capacity_bytes, scsi.temperature_c) == (
        "Seagate Expansion", "NA8F2KQX", 1000204885504, None)  # 0 °C from a bridge is no reading


def test_failing_nvme_and_unopened_disks():
    failing = parse_smartctl(fixture("usb-sat-failing.json"))
    assert failing.opened and failing.smart_ok is False and failing.exit_status == 24  # health bits, not an error
    nvme = parse_smartctl(fixture("usb-nvme.json"))
    assert (nvme.smart_ok, nvme.power_on_hours, nvme.capacity_bytes, nvme.needs_sat) == (True, 733, 500107862016,
                                                                                         False)
    denied = parse_smartctl(fixture("permission-denied.json"))
    assert not denied.opened and denied.messages == ["Smartctl open device: /dev/sdb failed: Permission denied"]
    assert not parse_smartctl(fixture("no-such-device.json")).opened


def test_what_is_not_smartctl_json():
    with pytest.raises(ParseError, match=re.escape("smartctl: expected JSON (smartmontools 7 or later is needed")):
        parse_smartctl(fixture("old-smartctl.txt"))
    with pytest.raises(ParseError, match=re.escape("smartctl: power_on_time.hours: expected int, got '\"many\"'")):
        parse_smartctl(fixture("garbled.json"))
    with pytest.raises(ParseError, match="expected its JSON document"):
        parse_smartctl("[1, 2]")


def test_usb_disks_in_sysfs_and_udev():
    found = {d.node: d for d in scan_sysfs(FIX / "sys" / "block", FIX / "udev" / "data")}
    assert not found["/dev/sda"].usb  # the PC's own disk
    usb = found["/dev/sdb"]
    assert usb.usb and usb.size_bytes == 3907029168 * 512 and usb.model == "Elements 25A2"
    assert usb.udev_serial == "575832314131394142434445"
    assert parse_udev("E:ID_BUS=usb\nS:disk/by-id/x\nE:A=b=c\n") == {"ID_BUS": "usb", "A": "b=c"}


def test_free_space_of_the_disks_file_systems():
    parts = [SimpleNamespace(device="/dev/sda2", mountpoint="/"),
             SimpleNamespace(device="/dev/sdb1", mountpoint="/media/dir/SAUVEGARDE"),
             SimpleNamespace(device="/dev/sdb2", mountpoint="/media/dir/OTHER"),
             SimpleNamespace(device="/dev/sdbc1", mountpoint="/media/elsewhere")]
    free = {"/": 1, "/media/dir/SAUVEGARDE": 700, "/media/dir/OTHER": 300, "/media/elsewhere": 5}
    assert free_bytes("/dev/sdb", parts, lambda m: SimpleNamespace(free=free[m])) == 1000
    assert free_bytes("/dev/sdc", parts, lambda m: SimpleNamespace(free=free[m])) is None  # not mounted


# ---------------------------------------------------------------- the probe

class Smartctl:
    """Answers smartctl command lines with captured output."""

    def __init__(self, answers: dict[tuple[str, ...], str]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    async def __call__(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        args = tuple(argv[1:])
        self.calls.append(args)
        text = fixture(self.answers[args])
        code = msgspec.json.decode(text)["smartctl"]["exit_status"] if text.startswith("{") else 1
        return code, text, ""


PARTS = [SimpleNamespace(device="/dev/sdb1", mountpoint="/media/dir/SAUVEGARDE")]


def probe_for(run, tmp_path: Path, *, sys_block: Path = FIX / "sys" / "block", at: datetime = NOW, **options):
    return DiskProbe(id_salt=SALT, run=run, sys_block=str(sys_block), udev_data=str(FIX / "udev" / "data"),
                     partitions=lambda: PARTS, usage=lambda m: SimpleNamespace(free=123_000_000_000),
                     platform="linux", state_file=str(tmp_path / "disks.json"), now=lambda: at, **options)


async def test_an_unknown_bridge_is_read_again_with_sat(tmp_path):
    run = Smartctl({("-j", "-a", "/dev/sdb"): "usb-unknown-bridge.json",
                    ("-j", "-a", "-d", "sat", "/dev/sdb"): "usb-sat-ok.json"})
    [disk] = roundtrip(await probe_for(run, tmp_path).collect())
    assert run.calls == [("-j", "-a", "/dev/sdb"), ("-j", "-a", "-d", "sat", "/dev/sdb")]  # never the PC's sda
    assert disk.present and disk.disk_id == peripheral_id(SALT, "disk", "WD-WX21A19ABCDE")
    assert (disk.total_bytes, disk.free_bytes, disk.smart_ok, disk.power_on_hours, disk.temperature_c) == (
        2000398934016, 123_000_000_000, True, 1523, 31.0)
    assert disk.last_connected_at == disk.at == NOW
    assert b"WD-WX21A19ABCDE" not in msgspec.json.encode(disk)


async def test_a_bridge_without_smart_even_through_sat(tmp_path):
    run = Smartctl({("-j", "-a", "/dev/sdb"): "usb-scsi-no-smart.json",
                    ("-j", "-a", "-d", "sat", "/dev/sdb"): "no-such-device.json"})
    [disk] = roundtrip(await probe_for(run, tmp_path).collect())
    assert disk.present and disk.smart_ok is None and disk.power_on_hours is None
    assert disk.total_bytes == 1000204885504 and disk.disk_id == peripheral_id(SALT, "disk", "NA8F2KQX")


async def test_a_failing_disk(tmp_path):
    run = Smartctl({("-j", "-a", "/dev/sdb"): "usb-sat-failing.json"})
    [disk] = roundtrip(await probe_for(run, tmp_path).collect())
    assert disk.smart_ok is False and disk.power_on_hours == 20871


async def test_permission_denied_still_reports_the_disk_and_says_what_to_do(tmp_path):
    run = Smartctl({("-j", "-a", "/dev/sdb"): "permission-denied.json"})
    with pytest.raises(DeviceErrors, match=re.escape("/dev/sdb: smartctl: Smartctl open device: /dev/sdb failed: "
                                                     "Permission denied (let the agent run smartctl through sudo")) as e:
        await probe_for(run, tmp_path).collect()
    [disk] = roundtrip(e.value.records)
    assert disk.present and disk.smart_ok is None and disk.total_bytes == 3907029168 * 512
    assert disk.disk_id == peripheral_id(SALT, "disk", "575832314131394142434445")  # udev's serial


async def test_no_smartctl_is_not_an_error(tmp_path, caplog):
    probe = probe_for(run_cmd_status, tmp_path, smartctl=["no-such-smartctl"])  # the real command runner
    [disk] = roundtrip(await probe.collect())
    [again] = await probe.collect()
    assert disk.present and disk.smart_ok is None and disk.disk_id and again.disk_id == disk.disk_id
    assert caplog.text.count("no-such-smartctl: not installed") == 1
    assert "install smartmontools" in caplog.text


async def test_garbage_from_smartctl_is_a_problem(tmp_path):
    run = Smartctl({("-j", "-a", "/dev/sdb"): "garbled.json"})
    with pytest.raises(DeviceErrors, match=re.escape("/dev/sdb: smartctl: power_on_time.hours: expected int")) as e:
        await probe_for(run, tmp_path).collect()
    assert e.value.records == []


async def test_a_disk_seen_before_is_reported_absent_with_its_last_connection(tmp_path, caplog):
    run = Smartctl({("-j", "-a", "/dev/sdb"): "usb-sat-ok.json"})
    [seen] = await probe_for(run, tmp_path).collect()
    empty = tmp_path / "no-disks"
    empty.mkdir()
    later = NOW + timedelta(days=9)
    # A new probe: the agent restarted; the memory is in the state directory.
    [absent] = roundtrip(await probe_for(run, tmp_path, sys_block=empty, at=later).collect())
    assert not absent.present and absent.disk_id == seen.disk_id
    assert absent.last_connected_at == NOW and absent.at == later and absent.smart_ok is None
    assert oct((tmp_path / "disks.json").stat().st_mode & 0o777) == "0o600"
    (tmp_path / "disks.json").write_text("not json")
    caplog.set_level(logging.WARNING)
    assert await probe_for(run, tmp_path, sys_block=empty).collect() == []
    assert "cannot read" in caplog.text


async def test_the_memory_is_bounded_and_says_so(tmp_path, caplog):
    from tice_agent.probes.disk import MAX_REMEMBERED, Remembered

    empty = tmp_path / "no-disks"
    empty.mkdir()
    probe = probe_for(None, tmp_path, sys_block=empty)
    probe._memory = {f"{i:032x}": Remembered(last_connected_at=NOW - timedelta(days=i)) for i in range(20)}
    absent = await probe.collect()
    assert len(absent) == 20  # this reading still reports all of them...
    assert len(probe._memory) == MAX_REMEMBERED and f"{19:032x}" not in probe._memory  # ...then the oldest go
    assert "the 4 seen longest ago are no longer reported absent" in caplog.text


async def test_listed_devices_off_linux(tmp_path, caplog):
    run = Smartctl({("-j", "-a", "/dev/sdb"): "usb-nvme.json"})
    probe = probe_for(run, tmp_path)
    probe._platform = "win32"
    assert await probe.collect() == []
    assert "list the backup disk in [probes.disk] devices" in caplog.text
    probe.devices = ["/dev/sdb"]
    [disk] = await probe.collect()
    assert disk.power_on_hours == 733 and disk.total_bytes == 500107862016


def test_options_are_checked():
    with pytest.raises(ValueError, match="smartctl: expected a command"):
        DiskProbe(smartctl=[])
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        DiskProbe(timeout_s=0)
