from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

import tice_collector
from tests.helpers import run_collector
from tice_collector.settings import Settings, SettingsError, load_settings

EXAMPLE = Path(tice_collector.__file__).with_name("collector.example.toml")


def test_example_documents_every_setting_with_its_default(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    documented = dict(re.findall(r"^# (\w+) = (.+)$", text, re.MULTILINE))
    fields = {f.name: f.default for f in msgspec.structs.fields(Settings)}
    assert set(documented) == set(fields)
    # Uncommented, the example must load and give exactly the defaults.
    uncommented = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE)
    path = tmp_path / "collector.toml"
    path.write_text(uncommented, encoding="utf-8")
    assert load_settings(path, environ={}) == Settings()


def test_environment_wins_over_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('listen = "127.0.0.1:9000"\npool_max_size = 4\n')
    s = load_settings(cfg, environ={"TICE_LISTEN": "0.0.0.0:9100", "TICE_RETRY_AFTER_S": "7"})
    assert (s.listen, s.pool_max_size, s.retry_after_s) == ("0.0.0.0:9100", 4, 7)


@pytest.mark.parametrize(("content", "env", "message"), [
    ("colour = 1\n", {}, "colour: unknown setting"),
    ("pool_max_size = 'ten'\n", {}, "pool_max_size: Expected `int`, got `str`"),
    ("pool_max_size = 0\n", {}, "pool_max_size: Expected `int` >= 1"),
    ("listen = 'localhost'\n", {}, "listen: expected HOST:PORT"),
    ("listen = '127.0.0.1:0'\n", {}, "listen: the port must be 1 to 65535 (agents need to know it), got '127.0.0.1:0'"),
    ("", {"TICE_LISTEN": "[::1]:70000"}, "listen: the port must be 1 to 65535"),
    ("listen = '127.0.0.1:\u00b2'\n", {}, "listen: expected HOST:PORT, got '127.0.0.1:\u00b2'"),
    ("", {"TICE_LISTEN": "127.0.0.1:\u0661\u0668\u0660\u0668\u0660"}, "listen: expected HOST:PORT"),
    ("log_format = 'xml'\n", {}, "log_format: Invalid enum value 'xml'; expected one of text, json"),
    ("", {"TICE_DB_TIMEOUT_S": "soon"}, "db_timeout_s: Expected `float`, got `str`"),
    ("db_timeout_s = inf\n", {}, "db_timeout_s: Expected `float` <= 3600"),
    ("", {"TICE_DB_TIMEOUT_S": "2200000"}, "db_timeout_s: Expected `float` <= 3600"),
    ("", {"TICE_NOPE": "1"}, "TICE_NOPE: unknown setting"),
    ("db_timeout_s = 2\n", {}, "writer_lock_timeout_s (2.0 s) must be at least 1 ms less than db_timeout_s (2.0 s): "
                               "lower it"),
    ("writer_lock_timeout_s = 10\n", {}, "writer_lock_timeout_s (10.0 s) must be at least 1 ms less than db_timeout_s (5.0 s)"),
    ("writer_lock_timeout_s = 4.9999\n", {}, "writer_lock_timeout_s (4.9999 s) must be at least 1 ms less"),
    ("tls_cert_file = 'a.pem'\n", {}, "tls_cert_file and tls_key_file must be set together"),
    ("listen = \n", {}, "invalid TOML"),
    ("admin_token = 'abcde'\n", {}, "admin_token: 5 characters is too short, at least 16 are needed: use a random "
                                    "one, e.g. `openssl rand -hex 16` (empty disables it)"),
    ("", {"TICE_REPORT_TOKEN": "x" * 15}, "report_token: 15 characters is too short, at least 16"),
])
def test_bad_settings_name_the_key(tmp_path, content, env, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(SettingsError) as e:
        load_settings(cfg, environ=env)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_settings_exit_2_with_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("pool_max_size = -3\n")
    r = run_collector("serve", "--config", str(cfg))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "pool_max_size" in r.stderr and "Traceback" not in r.stderr


def test_missing_config_file_exits_2(tmp_path):
    r = run_collector("migrate", "--config", str(tmp_path / "none.toml"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_the_agents_variables_are_not_collector_settings():
    """One shell may hold both tools: the agent's documented variables are left to the agent."""
    agent = Path(__file__).resolve().parents[2] / "agents" / "tice_agent"
    used = {m for path in agent.rglob("*.py") for m in re.findall(r"\bTICE_[A-Z_]+\b", path.read_text())}
    assert used == {"TICE_AGENT_CONFIG", "TICE_ENROLL_SECRET"}, used  # a new one belongs in AGENT_VARIABLES
    settings = load_settings(environ={"TICE_AGENT_CONFIG": "/tmp/x.toml", "TICE_ENROLL_SECRET": "s3cret",
                                      "TICE_RETRY_AFTER_S": "7"})
    assert settings.retry_after_s == 7
    # A typo of a collector setting is still refused, naming the variable.
    with pytest.raises(SettingsError, match="TICE_RETRY_AFTR_S: unknown setting"):
        load_settings(environ={"TICE_AGENT_CONFIG": "/tmp/x.toml", "TICE_RETRY_AFTR_S": "7"})


def test_tokens_of_16_characters_or_none_are_accepted():
    s = load_settings(environ={"TICE_ADMIN_TOKEN": "a" * 16, "TICE_REPORT_TOKEN": ""})
    assert (s.admin_token, s.report_token) == ("a" * 16, "")


@pytest.mark.parametrize(("listen", "url"), [
    ("[::1]:8091", "http://[::1]:8091"),
    ("127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("[2001:db8::5]:443", "http://[2001:db8::5]:443"),
    ("localhost:80", "http://localhost:80"),
])
def test_a_listening_address_is_shown_as_a_url_with_ipv6_in_brackets(listen, url):
    from tice_collector.settings import listen_url, parse_listen

    assert listen_url("http", *parse_listen(listen)) == url
