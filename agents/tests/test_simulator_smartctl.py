"""The USB disk simulator (tice_agent.simulators.smartctl): its smartctl answers have the shapes of
the captured ones (agents/tests/fixtures/disk/), its sysfs and udev tree is found as a USB disk, and
the real disk probe reading it (sysfs, udev, the smartctl stand-in run as a command, the mount
table) reports the disk with its SMART health, its failing, its bridges and its absence."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from agent_testing import roundtrip
from tice_agent.probes._identity import peripheral_id
from tice_agent.probes.disk import DiskProbe, parse_smartctl, scan_sysfs
from tice_agent.simulators.smartctl import SimDisk, SmartctlSimulator, answer

FIX = Path(__file__).resolve().parent / "fixtures" / "disk"
SALT = "d1" * 32
FAILING = SimDisk(serial="WKPA1B2C", model="ST1000LM048-2E7172", family="Seagate BarraCuda 2.5 5400",
                  capacity_bytes=1000204886016, free_bytes=400_000_000_000, passed=False, power_on_hours=20871,
                  temperature_c=38, bridge_model="Expansion")


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def smart(disks: dict[str, SimDisk], *argv: str):
    doc, status = answer(disks, list(argv))
    assert doc["smartctl"]["exit_status"] == status
    return parse_smartctl(json.dumps(doc))


def same(a, b, *names: str) -> None:
    assert {n: getattr(a, n) for n in names} == {n: getattr(b, n) for n in names}


FIELDS = ("exit_status", "messages", "protocol", "model", "serial", "capacity_bytes", "smart_ok", "power_on_hours",
          "temperature_c")


# ---------------------------------------------------------------- the answers' shapes

def test_a_known_bridge_answers_as_the_captured_wd_elements():
    got = smart({"sdb": SimDisk()}, "-j", "-a", "/dev/sdb")
    same(got, parse_smartctl(fixture("usb-sat-ok.json")), *FIELDS)
    assert got.opened and not got.needs_sat


def test_an_unknown_bridge_needs_sat_then_gives_smart():
    disks = {"sdb": SimDisk(bridge="unknown")}
    plain = smart(disks, "-j", "-a", "/dev/sdb")
    same(plain, parse_smartctl(fixture("usb-unknown-bridge.json")), "exit_status", "messages", "serial")
    assert plain.needs_sat and not plain.opened
    same(smart(disks, "-j", "-a", "-d", "sat", "/dev/sdb"), parse_smartctl(fixture("usb-sat-ok.json")), *FIELDS)


def test_a_failing_disk_sets_the_health_bits_and_a_scsi_bridge_hides_smart():
    same(smart({"sdc": FAILING}, "-j", "-a", "/dev/sdc"), parse_smartctl(fixture("usb-sat-failing.json")), *FIELDS)
    scsi = SimDisk(serial="NA8F2KQX", capacity_bytes=1000204885504, bridge="scsi", bridge_model="Seagate Expansion")
    got = smart({"sdc": scsi}, "-j", "-a", "/dev/sdc")
    same(got, parse_smartctl(fixture("usb-scsi-no-smart.json")), "exit_status", "protocol", "model", "serial",
         "smart_ok", "temperature_c")
    assert got.needs_sat and got.opened
    through_sat = smart({"sdc": scsi}, "-j", "-a", "-d", "sat", "/dev/sdc")
    assert through_sat.exit_status == 2 and not through_sat.opened


def test_no_such_device_and_a_bad_command_line():
    gone = smart({}, "-j", "-a", "/dev/sdb")
    same(gone, parse_smartctl(fixture("no-such-device.json")), "exit_status", "messages")
    assert smart({}, "-j", "-a", "-x", "/dev/sdb").exit_status == 1
    assert smart({"sdb": SimDisk()}, "-j", "-a", "-d", "megaraid,0", "/dev/sdb").exit_status == 1


def test_a_disk_the_simulator_cannot_be():
    with pytest.raises(ValueError, match="bridge: expected one of sat, unknown, scsi"):
        SimDisk(bridge="thunderbolt")
    with pytest.raises(ValueError, match="free_bytes: expected 0 to capacity_bytes"):
        SimDisk(free_bytes=SimDisk().capacity_bytes + 1)


def test_its_sysfs_and_udev_tree_shows_a_usb_disk_beside_the_pcs_own(tmp_path):
    sim = SmartctlSimulator(tmp_path)
    assert sim.plug(SimDisk()) == "/dev/sdb" and sim.plug(FAILING) == "/dev/sdc"
    found = {d.node: d for d in scan_sysfs(sim.sys_block, sim.udev_data)}
    assert sorted(found) == ["/dev/sda", "/dev/sdb", "/dev/sdc"] and not found["/dev/sda"].usb
    sdb = found["/dev/sdb"]
    # The captured tree's sdb: the same size, model and udev serial (agents/tests/fixtures/disk/sys).
    assert sdb.usb and sdb.size_bytes == 3907029168 * 512 and sdb.model == "Elements 25A2"
    assert sdb.udev_serial == "575832314131394142434445"
    [mounted, _] = sim.partitions()
    assert mounted.device == "/dev/sdb1" and (tmp_path / "media").is_dir()
    assert sim.usage(mounted.mountpoint).free == SimDisk().free_bytes
    with pytest.raises(FileNotFoundError):
        sim.usage("/")
    assert SmartctlSimulator(tmp_path).disks() == {"sdb": SimDisk(), "sdc": FAILING}  # kept on disk


# ---------------------------------------------------------------- the real probe reading it

def probe(sim: SmartctlSimulator, tmp_path) -> DiskProbe:
    return DiskProbe(id_salt=SALT, state_file=str(tmp_path / "disks.json"), **sim.probe_options())


@pytest.mark.slow  # runs the smartctl stand-in as a command
async def test_the_disk_probe_reports_a_simulated_disk_with_its_smart_health(tmp_path):
    sim = SmartctlSimulator(tmp_path / "usb")
    sim.plug(SimDisk())
    sim.plug(FAILING)
    sim.plug(SimDisk(serial="WD-WXUNKNOWN01", bridge="unknown", free_bytes=10**12))
    healthy, failing, unknown = roundtrip(await probe(sim, tmp_path).collect())
    assert (healthy.present, healthy.disk_id) == (True, peripheral_id(SALT, "disk", "WD-WX21A19ABCDE"))
    assert (healthy.total_bytes, healthy.free_bytes, healthy.smart_ok, healthy.power_on_hours,
            healthy.temperature_c) == (2000398934016, 1_234_567_168, True, 1523, 31.0)
    assert (failing.disk_id, failing.smart_ok, failing.power_on_hours, failing.total_bytes, failing.free_bytes) == (
        peripheral_id(SALT, "disk", "WKPA1B2C"), False, 20871, 1000204886016, 400_000_000_000)
    # Read again with -d sat: the disk's own serial and SMART, not the bridge's.
    assert (unknown.disk_id, unknown.smart_ok, unknown.free_bytes) == (
        peripheral_id(SALT, "disk", "WD-WXUNKNOWN01"), True, 10**12)


@pytest.mark.slow  # runs the smartctl stand-in as a command
async def test_an_unplugged_disk_is_remembered_absent_and_a_scsi_bridge_still_reported(tmp_path):
    sim = SmartctlSimulator(tmp_path / "usb")
    node = sim.plug(SimDisk())
    [seen] = await probe(sim, tmp_path).collect()
    sim.unplug(node)
    sim.plug(SimDisk(serial="NA8F2KQX", capacity_bytes=1000204885504, bridge="scsi", bridge_model="Seagate Expansion"))
    scsi, absent = roundtrip(await probe(sim, tmp_path).collect())
    assert scsi.present and scsi.smart_ok is None and scsi.total_bytes == 1000204885504
    assert scsi.disk_id == peripheral_id(SALT, "disk", "NA8F2KQX")
    assert not absent.present and absent.disk_id == seen.disk_id and absent.last_connected_at == seen.at


@pytest.mark.slow  # runs the smartctl stand-in as a command
def test_the_stand_in_exits_with_smartctls_bit_mask(tmp_path):
    sim = SmartctlSimulator(tmp_path)
    out = subprocess.run([*sim.command(), "--plug", "--failing"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"disk WD-WX21A19ABCDE plugged in as /dev/sdb under {tmp_path} (SMART: failing, bridge: sat)")
    assert str(sim.sys_block) in out
    run = subprocess.run([*sim.command(), "-j", "-a", "/dev/sdb"], capture_output=True, text=True)
    assert run.returncode == 24 and json.loads(run.stdout)["smart_status"] == {"passed": False}
    gone = subprocess.run([*sim.command(), "-j", "-a", "/dev/sdc"], capture_output=True, text=True)
    assert gone.returncode == 2 and "No such device" in gone.stdout
    assert subprocess.run([*sim.command(), "-a", "/dev/sdb"], capture_output=True, text=True).returncode == 1
    assert asdict(sim.disks()["sdb"])["passed"] is False
