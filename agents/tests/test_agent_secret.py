"""`tice-agent enroll --secret -`: what it takes from standard input, and its one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tice_agent.cli import secret_from_text
from tice_agent.config import ConfigError

SECRET = "tice_enr_9TkXBkQ_wJHmLwATkLuRcJDOe-_enq-o"
OTHER = "tice_enr_Zq0f3Yl2o0qk1ZPqg2hO5dVYbqkJ8xWm"
BANNER = "enrol secret 2 for school 0210001A (shown once, store it now):"


@pytest.mark.parametrize(("text", "expected"), [
    (SECRET + "\n", SECRET),
    (SECRET, SECRET),                                   # no final newline (echo -n, an editor)
    (f"\n\n  {SECRET}  \n\n", SECRET),                  # blank lines and spaces around it
    (SECRET + "\r\n", SECRET),                          # saved on Windows
    ("\ufeff" + SECRET + "\n", SECRET),                 # saved by Notepad, with a BOM
    (f"{BANNER}\n{SECRET}\n", SECRET),                  # the whole output of an older enroll-secret create
    (f"{BANNER}\n\n{SECRET}\n\n", SECRET),
    ("my-own-secret-from-a-vault\n", "my-own-secret-from-a-vault"),  # one line is taken as it is
], ids=["line", "no-newline", "blank-lines", "crlf", "bom", "banner", "banner-blank-lines", "one-other-line"])
def test_the_secret_is_found(text: str, expected: str) -> None:
    assert secret_from_text(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "--secret -: standard input is empty"),
    ("\n \n\n", "--secret -: standard input is empty"),
    (f"{BANNER}\nno secret here\n", "--secret -: standard input has 2 lines and none is an enrol secret"),
    (f"{SECRET}\n{OTHER}\n", "--secret -: standard input has 2 lines and 2 are an enrol secret"),
    (f"{SECRET} {OTHER}\nx\n", "and none is an enrol secret"),  # a secret is the whole line
], ids=["empty", "blank", "no-secret", "two-secrets", "not-a-whole-line"])
def test_no_single_secret_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        secret_from_text(text)
    assert message in str(e.value)


def _enroll(stdin: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Port 9 (discard) on loopback: the secret is checked before anything is sent.
    return subprocess.run(
        [sys.executable, "-m", "tice_agent.cli", "enroll", "--server", "http://127.0.0.1:9", "--secret", "-",
         "--serial", "SN-1"],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_cli_refuses_two_secrets_with_exit_2_and_one_line(tmp_path: Path) -> None:
    res = _enroll(f"{SECRET}\n{OTHER}\n", tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "config error: --secret -: standard input has 2 lines and 2 are an enrol secret (tice_enr_...); "
        "give a file holding just the one secret"]
    assert not (tmp_path / ".local").exists()  # nothing written, nothing sent


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_cli_refuses_empty_input_with_exit_2(tmp_path: Path) -> None:
    res = _enroll("", tmp_path)
    assert res.returncode == 2, res.stderr
    assert "config error: --secret -: standard input is empty" in res.stderr and "Traceback" not in res.stderr
