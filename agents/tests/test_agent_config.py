"""Agent config: defaults, the shipped example, and one-line errors naming the key (exit 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tice_agent import config
from tice_agent.config import AgentConfig, ConfigError

EXAMPLE = Path(config.__file__).with_name("agent.example.toml")


def test_no_file_means_defaults() -> None:
    cfg = config.load(None)
    assert cfg == AgentConfig()
    assert cfg.spool.max_bytes == 50 * 1024 * 1024
    assert cfg.spool.max_age_days == 90
    assert cfg.batch.max_records == 500 and cfg.batch.max_bytes == 256 * 1024
    assert cfg.send.backoff_cap_s == 900
    assert set(cfg.enabled_probes()) == {"usage", "health", "network", "display"}


def test_example_loads_as_is_and_every_commented_value_is_the_default() -> None:
    assert config.load(EXAMPLE) == AgentConfig()
    # Uncomment every `# key = value` line (and every section header): still the defaults,
    # so the comments cannot drift from the code.
    text = EXAMPLE.read_text()
    lines = []
    for line in text.splitlines():
        m = re.match(r"^# (\[[\w.]+\]|\w+ = .*)$", line)
        lines.append(m.group(1) if m else line)
    uncommented = "\n".join(lines)
    assert "max_age_days = 90.0" in uncommented
    cfg = config.parse(__import__("tomllib").loads(uncommented))
    assert cfg.spool == AgentConfig().spool and cfg.send == AgentConfig().send
    assert cfg.batch == AgentConfig().batch and cfg.enroll == AgentConfig().enroll
    assert cfg.enabled_probes() == AgentConfig().enabled_probes()


def test_probe_options_go_to_the_constructor_and_disabling_works() -> None:
    cfg = config.parse({"probes": {"usage": {"interval_s": 30, "idle_after_s": 120},
                                   "display": {"enabled": False},
                                   "projector": {"host": "10.0.0.5"}}})
    enabled = cfg.enabled_probes()
    assert enabled["usage"].interval_s == 30 and enabled["usage"].options == {"idle_after_s": 120}
    assert "display" not in enabled
    assert enabled["projector"].options == {"host": "10.0.0.5"}


def test_default_state_dir_per_platform() -> None:
    assert config.default_state_dir({"XDG_STATE_HOME": "/x"}, "linux") == Path("/x/tice-agent")
    assert config.default_state_dir({}, "linux") == Path.home() / ".local/state/tice-agent"
    assert config.default_state_dir({"LOCALAPPDATA": "C:/L"}, "win32") == Path("C:/L/tice-agent")


BAD = [
    ('[probes.usage]\ninterval_s = "abc"\n', 'probes.usage.interval_s: expected a number > 0 and <= 3600, got "abc"'),
    ("[probes.usage]\ninterval_s = 0\n", "probes.usage.interval_s: expected a number > 0 and <= 3600, got 0"),
    # The collector refuses a record covering more than 7,500 s: the agent never makes one.
    ("[probes.usage]\ninterval_s = 7200\n", "probes.usage.interval_s: expected a number > 0 and <= 3600, got 7200"),
    ("[probes.health]\ntimeout_s = -1\n", "probes.health.timeout_s: expected a number > 0 and <= 3600, got -1"),
    ('[probes.usage]\nenabled = "yes"\n', 'probes.usage.enabled: expected true or false, got "yes"'),
    ("probes = 3\n", "probes: expected a table"),
    ("[probes]\nusage = 3\n", "probes.usage: expected a table, got 3"),
    ("[spool]\nmax_bytes = -5\n", "spool.max_bytes: expected an integer >= 65536 and <= 17179869184, got -5"),
    ('[spool]\nmax_age_days = "long"\n', 'spool.max_age_days: expected a number > 0 and <= 3650, got "long"'),
    ("[spool]\nmax_size = 5\n", "spool.max_size: unknown key"),
    ("[batch]\nmax_records = 1.5\n", "batch.max_records: expected an integer >= 1 and <= 5000, got 1.5"),
    ("[batch]\nmax_records = 9000\n", "batch.max_records: expected an integer >= 1 and <= 5000, got 9000"),
    ("[send]\nbackoff_cap_s = 1\n", "send.backoff_cap_s: must be >= send.backoff_base_s"),
    ("[send]\ndrain_batches_per_s = 0\n", "send.drain_batches_per_s: expected a number > 0 and <= 1000, got 0"),
    ('[enroll]\nkind = "phone"\n', 'enroll.kind: expected one of '),
    ('[enroll]\nkeep_secret = "no"\n', 'enroll.keep_secret: expected true or false, got "no"'),
    ('log_level = "loud"\n', 'log_level: expected one of debug, error, info, warning, got "loud"'),
    ("serverr = 1\n", "serverr: unknown key"),
    ('server = "http://collector.example.org"\n', "server: expected an https:// URL"),
    ("server = 3\n", "server: expected a string, got 3"),
    ('ca_bundle = "/nonexistent/ca.pem"\n', "ca_bundle: no such file"),
    ("spool = 3\n", "spool: expected a table, got 3"),
    ("this is not toml\n", "not valid TOML"),
    # Every number finite and bounded: TOML spells inf and nan, and an interval of inf never sends.
    ("[send]\ninterval_s = inf\n", "send.interval_s: expected a number > 0 and <= 86400, got inf"),
    ("[send]\ninterval_s = nan\n", "send.interval_s: expected a number > 0 and <= 86400, got nan"),
    ("[send]\ntimeout_s = inf\n", "send.timeout_s: expected a number > 0 and <= 3600, got inf"),
    ("[send]\nbackoff_base_s = inf\n", "send.backoff_base_s: expected a number > 0 and <= 86400, got inf"),
    ("[send]\nbackoff_factor = inf\n", "send.backoff_factor: expected a number >= 1 and <= 100, got inf"),
    ("[send]\nbackoff_cap_s = -inf\n", "send.backoff_cap_s: expected a number > 0 and <= 86400, got -inf"),
    ("[send]\ndrain_batches_per_s = inf\n", "send.drain_batches_per_s: expected a number > 0 and <= 1000, got inf"),
    ("[send]\ninitial_delay_max_s = nan\n",
     "send.initial_delay_max_s: expected a number >= 0 and <= 86400, got nan"),
    ("[send]\ngzip_min_bytes = inf\n", "send.gzip_min_bytes: expected an integer >= 0 and <= 4194304, got inf"),
    ("[spool]\nmax_bytes = inf\n", "spool.max_bytes: expected an integer >= 65536 and <= 17179869184, got inf"),
    ("[spool]\nmax_age_days = inf\n", "spool.max_age_days: expected a number > 0 and <= 3650, got inf"),
    ("[batch]\nmax_bytes = nan\n", "batch.max_bytes: expected an integer >= 1024 and <= 4194304, got nan"),
    ("[runner]\nstatus_every = 10000000\n", "runner.status_every: expected an integer >= 1 and <= 1000000, got 10000000"),
    ("[probes.usage]\ninterval_s = inf\n", "probes.usage.interval_s: expected a number > 0 and <= 3600, got inf"),
    ("[probes.health]\ntimeout_s = inf\n", "probes.health.timeout_s: expected a number > 0 and <= 3600, got inf"),
]


@pytest.mark.parametrize(("toml", "expected"), BAD, ids=[e.split(":")[0] for _, e in BAD])
def test_bad_config_parse_names_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert expected in str(info.value)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("TICE_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "tice_agent.cli", *args], capture_output=True, text=True,
                          timeout=60, env=full)


@pytest.mark.slow  # runs the CLI or Python in a child process
@pytest.mark.parametrize(("toml", "expected"), BAD, ids=[e.split(":")[0] for _, e in BAD])
def test_bad_config_cli_exits_2_with_one_line(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(toml)  # parsing fails before the state directory is touched
    res = _cli("--config", str(path), "status")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("config error: ")
    assert expected in lines[0]


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_config_from_environment_and_after_the_subcommand(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[spool]\nmax_bytes = 1\n")
    assert _cli("status", env={"TICE_AGENT_CONFIG": str(path)}).returncode == 2
    res = _cli("status", "--config", str(path))
    assert res.returncode == 2 and "spool.max_bytes" in res.stderr


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    res = _cli("--config", str(tmp_path / "nope.toml"), "status")
    assert res.returncode == 2 and "no such config file" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_unknown_probe_and_bad_probe_option_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'state_dir = "{tmp_path}"\n[probes.nosuchprobe]\ninterval_s = 5\n')
    res = _cli("--config", str(path), "once")
    assert res.returncode == 2 and "config error: probes.nosuchprobe: unknown probe" in res.stderr


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_good_config_status_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[spool]\nmax_age_days = 120\n')
    res = _cli("--config", str(path), "status")
    assert res.returncode == 0, res.stderr
    assert "not enrolled" in res.stdout


def test_every_number_in_the_config_has_both_bounds() -> None:
    """No numeric setting is left open at the top, where inf would pass (nan fails any bound)."""
    import msgspec

    def numbers(t, path=""):
        for f in t.fields:
            ft = f.type
            if isinstance(ft, msgspec.inspect.StructType):
                yield from numbers(ft, f"{path}{f.name}.")
            elif isinstance(ft, (msgspec.inspect.FloatType, msgspec.inspect.IntType)):
                yield f"{path}{f.name}", ft

    found = dict(numbers(msgspec.inspect.type_info(AgentConfig)))
    found |= {f"probes.*.{k}": v for k, v in numbers(msgspec.inspect.type_info(config.ProbeConfig))}
    assert len(found) == 15, sorted(found)
    for name, t in found.items():
        assert (t.gt is not None or t.ge is not None) and (t.lt is not None or t.le is not None), name
