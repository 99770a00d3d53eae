"""The `tice-agent` command line when things are wrong: damaged credentials, a state directory
that cannot be written, a broken pipe, odd arguments; and `--version`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tice_agent import state as st
from tice_agent.cli import main


def config_for(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[probes.usage]\nenabled = false\n'
                      "[probes.display]\nenabled = false\n" + extra)
    return config


@pytest.mark.parametrize(("damage", "reason"), [
    ('{"token":1}', "expected `str`, got `int` - at `$.token`"),
    ("\n", "empty"),
    ("", "empty"),
    ('{"token": "t"', "not JSON"),
    ('{"token": "t"}', "object missing required field `server`"),
])
@pytest.mark.parametrize("command", ["status", "once"])
def test_damaged_credentials_give_one_line_naming_the_file_and_exit_2(tmp_path, capsys, damage, reason, command):
    config = config_for(tmp_path)
    creds = tmp_path / "state" / st.CREDENTIALS
    creds.parent.mkdir()
    creds.write_text(damage)
    assert main(["--config", str(config), command]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (f"error: {creds}: damaged credentials ({reason}); re-enrol this device with "
                       "`tice-agent enroll --server URL --secret -`\n")


def test_unreadable_credentials_say_so(tmp_path):
    (tmp_path / st.CREDENTIALS).mkdir()  # a directory where the file should be: read fails
    with pytest.raises(st.CredentialsError, match=r"credentials.json: cannot read the credentials: Is a directory"):
        st.load_credentials(tmp_path)
    assert st.load_credentials(tmp_path / "nowhere") is None  # never enrolled: no error


ENROL = ["enroll", "--server", "http://127.0.0.1:9", "--secret", "tice_enr_0123456789", "--serial", "LP-1"]


@pytest.mark.parametrize("command", [["run"], ENROL])
@pytest.mark.parametrize("where", ["/proc/nope", "/proc", "/dev/null/x"])
def test_a_state_dir_that_cannot_be_written_is_a_config_error(tmp_path, capsys, command, where):
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{where}"\n')
    assert main(["--config", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"config error: state_dir: cannot write {where}: ") and err.count("\n") == 1, err
    assert "set `state_dir` in the config" in err


@pytest.mark.parametrize("command", [["run"], ["once"], ["status"], ENROL])
def test_a_state_dir_that_is_a_file_is_a_config_error(tmp_path, capsys, command):
    (tmp_path / "file").write_text("")
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "file"}"\n')
    assert main(["--config", str(config), *command]) == 2
    assert capsys.readouterr().err.startswith(f"config error: state_dir: {tmp_path / 'file'} is not a directory")


def test_status_of_a_state_dir_no_daemon_can_use_is_not_a_traceback(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text('state_dir = "/proc"\n')
    assert main(["--config", str(config), "status"]) == 0
    assert "daemon:         not running" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["run"], ENROL])
def test_a_ca_bundle_tls_cannot_load_is_a_config_error(tmp_path, capsys, command):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nca_bundle = "{bundle}"\n')
    assert main(["--config", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"config error: ca_bundle: cannot load {bundle} as PEM certificates: ") and \
        err.count("\n") == 1, err


def _cli(*args: str, stdout: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    return subprocess.run([sys.executable, "-m", "tice_agent.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120, env=env)


@pytest.mark.slow  # runs the CLI in a child process
@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["once"]])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, command):
    """`tice-agent status | head -1`, the reader gone before the first byte: no traceback, no
    message, exit 1 (the Python docs' way for a closed pipe)."""
    config = config_for(tmp_path, "[probes.network]\nenabled = false\n")
    read, write = os.pipe()
    os.close(read)  # nobody will ever read: every write gets EPIPE
    try:
        done = _cli("--config", str(config), *command, stdout=write)
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 1, (done.returncode, done.stderr)


def test_version(capsys):
    from tice_agent.sender import agent_version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"tice-agent {agent_version()}\n"
    assert agent_version() != "0"  # the installed distribution's own version


@pytest.mark.parametrize("serial", ["", "   "])
def test_an_explicitly_empty_serial_is_refused(tmp_path, capsys, serial):
    """Not a silent fall-back to the install id: the admin meant to give one."""
    config = config_for(tmp_path)
    assert main(["--config", str(config), "enroll", "--server", "http://127.0.0.1:9", "--secret",
                 "tice_enr_0123456789", "--serial", serial]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: --serial: empty; give the inventory's serial, or leave --serial out")
    assert not (tmp_path / "state").exists()  # refused before anything was written


def test_an_existing_state_dir_keeps_its_mode_and_a_new_one_is_private(tmp_path):
    # state_dir may name any directory, even a system one (/proc): the agent never changes the
    # mode of a directory it did not create.
    from tice_agent.state import ensure_dir

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    ensure_dir(shared)
    assert shared.stat().st_mode & 0o777 == 0o755
    new = ensure_dir(tmp_path / "a" / "new")
    assert new.is_dir() and new.stat().st_mode & 0o777 == 0o700
