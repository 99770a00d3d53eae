"""The serial rule (hardware serial, placeholders skipped, else this install's own id, never the
machine-id cloned laptops share) and the signs of a state directory made on another machine,
on fixture machines: an image master, a laptop cloned from it, the master with a new dongle."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tice_agent import identity as idt

FIX = Path(__file__).resolve().parent / "fixtures" / "identity"


@pytest.mark.parametrize("value", [
    "To be filled by O.E.M.", "To Be Filled By O.E.M.", "Default string", "0123456789", "System Serial Number",
    "00000000", "0", "", "   ", "Not Specified", "None", "N/A", "FFFFFFFF", "XXXXXXXXXX", "Chassis Serial Number",
    "OEM", "\x00\x00\x00",
])
def test_placeholders_are_not_serials(value):
    assert idt.usable(value) is None


def test_real_serials_are_kept():
    assert idt.usable("PF2ABCDE\n") == "PF2ABCDE"
    assert idt.usable("CND0123XYZ") == "CND0123XYZ"
    assert idt.usable("PF2ABCDE" * 10) == ("PF2ABCDE" * 10)[:64]  # the wire's bound


@pytest.mark.parametrize(("machine", "serial"), [
    ("laptop-serial", ("PF2ABCDE", "DMI product_serial")),
    ("laptop-board", ("L1HF9AB01XY", "DMI board_serial")),  # product_serial is "0123456789"
    ("laptop-a", None),                                      # both placeholders
    ("laptop-user", None),                                   # readable by root only
])
def test_hardware_serial_on_linux(machine, serial):
    assert idt.hardware_serial(FIX / machine, "linux") == serial


def test_hardware_serial_on_windows():
    answers = {
        ("wmic", "bios"): "SerialNumber  \nTo be filled by O.E.M.\n",
        ("powershell", "Win32_BIOS"): "Default string\n",
        ("wmic", "baseboard"): None,  # wmic removed (Windows 11 24H2)
        ("powershell", "Win32_BaseBoard"): "/5CG1234XYZ/CNWSC0012A00AB/\n",
    }

    def run(argv):
        key = (argv[0], argv[1]) if argv[0] == "wmic" else (argv[0], argv[-1].split()[-1].split(")")[0])
        return answers[key]

    assert idt.hardware_serial(platform="win32", run=run) == ("/5CG1234XYZ/CNWSC0012A00AB/", "baseboard serial")
    answers[("wmic", "bios")] = "SerialNumber\nCND0123XYZ\n"
    assert idt.hardware_serial(platform="win32", run=run) == ("CND0123XYZ", "BIOS serial")


def test_cloned_laptops_get_their_own_ids(tmp_path):
    # The master and its clone: same machine-id, no hardware serial. Each installs the agent.
    a, where = idt.machine_serial(tmp_path / "a", FIX / "laptop-a", "linux")
    b, _ = idt.machine_serial(tmp_path / "b", FIX / "laptop-b", "linux")
    assert a.startswith("iid-") and b.startswith("iid-") and a != b and len(a) == 36
    assert where == "this install's own id: no hardware serial readable"
    # Stable: the same install enrolling again keeps its id.
    assert idt.machine_serial(tmp_path / "a", FIX / "laptop-a", "linux")[0] == a
    # The id file is private and holds no MAC address, disk serial or machine-id.
    text = (tmp_path / "a" / idt.IDENTITY).read_text()
    for secret in ("3c:a0:67", "S4ELNX0M123456", "3f1c5ab2d04e4c6f9a8b7e6d5c4b3a29"):
        assert secret not in text
    assert len(json.loads(text)["hardware"]) == 4  # 2 permanent MACs, 2 disk hardware ids


def test_the_hardware_serial_wins_and_the_fingerprint_is_kept_anyway(tmp_path):
    assert idt.machine_serial(tmp_path, FIX / "laptop-serial", "linux") == ("PF2ABCDE", "DMI product_serial")
    assert idt.load(tmp_path) is not None


def test_hardware_facts_are_the_machines_own():
    facts = idt.hardware_facts(FIX / "laptop-a", "linux")
    # Not lo, not the bridge's software MAC; not the partition, LUKS or LVM ids a clone copies.
    assert facts == {"mac:3c:a0:67:11:22:33", "mac:54:e1:ad:aa:bb:cc",
                     "disk:nvme-SAMSUNG_MZVLB256HBHQ-000L7_S4ELNX0M123456", "disk:nvme-eui.0025388b91b0a1c2"}


def test_a_state_directory_cloned_with_the_disk_is_told(tmp_path):
    # The image was taken after the agent was installed: laptop-b boots laptop-a's state directory.
    idt.ensure(tmp_path, FIX / "laptop-a", "linux")
    ident = idt.load(tmp_path)
    assert ident is not None
    assert idt.copied_from_elsewhere(ident, FIX / "laptop-a", "linux") is None
    why = idt.copied_from_elsewhere(ident, FIX / "laptop-b", "linux")
    assert why is not None and why.startswith("this disk looks cloned from another machine")
    [warning] = idt.warnings(tmp_path, "iid-" + ident.install_id.hex, FIX / "laptop-b", "linux")
    assert "delete the state directory and enrol this machine again" in warning
    # Enrolling on the clone makes it an install id of its own.
    serial, _ = idt.machine_serial(tmp_path, FIX / "laptop-b", "linux")
    assert serial != "iid-" + ident.install_id.hex
    assert idt.warnings(tmp_path, serial, FIX / "laptop-b", "linux") == []


def test_the_same_machine_changed_a_little_is_the_same_machine(tmp_path):
    idt.ensure(tmp_path, FIX / "laptop-a", "linux")
    ident = idt.load(tmp_path)
    assert ident is not None
    # A USB dongle, the Wi-Fi with a random MAC, a reinstall (new machine-id): enp3s0 and the
    # disk are still there.
    assert idt.copied_from_elsewhere(ident, FIX / "laptop-a-later", "linux") is None


def test_a_home_directory_moved_to_other_hardware(tmp_path):
    idt.ensure(tmp_path, FIX / "laptop-a-later", "linux")
    ident = idt.load(tmp_path)
    assert ident is not None
    assert idt.copied_from_elsewhere(ident, FIX / "laptop-b", "linux") == \
        "the state directory was made on another machine (copied or moved here)"


def test_nothing_to_compare_is_no_warning(tmp_path):
    idt.ensure(tmp_path, FIX / "laptop-user", "linux")
    ident = idt.load(tmp_path)
    assert ident is not None
    empty = tmp_path / "no-hardware"
    (empty / "sys/class/net").mkdir(parents=True)
    assert idt.copied_from_elsewhere(ident, empty, "linux") is None


def test_a_legacy_machine_id_serial_is_warned_about(tmp_path):
    assert idt.warnings(tmp_path, "mid-17fd024361c3e715711d76c8b620e52d") == [idt.LEGACY_WARNING]
    assert idt.warnings(tmp_path, "PF2ABCDE") == []
    assert idt.warnings(tmp_path, None) == []


def test_status_shows_a_copied_state_directory(tmp_path, capsys):
    """`tice-agent status` on this very machine, with an identity file made elsewhere."""
    from datetime import UTC, datetime

    from tice_agent import cli
    from tice_agent import state as st

    if not idt.hardware_facts():
        pytest.skip("this machine shows no permanent MAC address or disk id to compare")
    state = tmp_path / "state"
    st.save_credentials(state, st.Credentials(server="http://127.0.0.1:9", device_id=uuid.uuid4(), token="t",
                                              school="0210001A", serial="mid-" + "0" * 31 + "1", kind="laptop",
                                              enrolled_at=datetime.now(UTC)))
    elsewhere = idt.new_identity(FIX / "laptop-a", "linux")
    idt.save(state, elsewhere)
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\n')
    assert cli.main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "WARNING:        the state directory was made on another machine (copied or moved here); its " \
           "credentials and spool belong to that machine" in out
    assert f"WARNING:        {idt.LEGACY_WARNING}" in out
    assert cli.main(["--config", str(config), "status", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert len(view["identity"]["warnings"]) == 2 and view["identity"]["serial"].startswith("mid-")
