"""The `tice-agent` command line when things are wrong: damaged credentials, a state directory
that cannot be written, a broken pipe, odd arguments; and `--version`."""

from __future__ import annotations

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
