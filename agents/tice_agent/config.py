"""Agent configuration: one TOML file, validated by msgspec into typed, frozen structs.

Every key has a default, so an agent runs without a file. Unknown keys are errors (a typo
must not silently fall back to a default), and every error names the key path, for example
`probes.usage.interval_s: expected a number > 0, got "abc"`.

Probe sections `[probes.<name>]` know three keys of their own (`enabled`, `interval_s`,
`timeout_s`); every other key in the section is passed to the probe's constructor as a
keyword argument, so a probe's options live next to it.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

from tice_wire import MAX_PROBE_INTERVAL_S, DeviceKind

MiB = 1024 * 1024
KiB = 1024

# Probes that run when the config says nothing about them: the ones every school laptop has.
# Probes that need a peer (projector, modem, backup disk) run only when their section enables them.
DEFAULT_PROBES: tuple[str, ...] = ("usage", "health", "network", "display")
PROBE_KEYS = ("enabled", "interval_s", "timeout_s")

# Every number has an upper bound as well: TOML spells `inf` and `nan`, and an interval of
# `inf` would pass a lower bound alone (msgspec refuses nan against any bound).
DAY_S = 86_400.0
HOUR_S = 3_600.0
GiB = 1024 * 1024 * 1024
UpToADay = Annotated[float, Meta(gt=0, le=DAY_S)]    # seconds
UpToAnHour = Annotated[float, Meta(gt=0, le=HOUR_S)]  # seconds


class ConfigError(Exception):
    """A configuration problem, already phrased for people: `<key path>: <what is wrong>`."""


class SpoolConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # 50 MiB holds months of records for one laptop (a record is about 200-300 bytes).
    max_bytes: Annotated[int, Meta(ge=64 * KiB, le=16 * GiB)] = 50 * MiB
    # Longer than the 8-week summer holiday, so a laptop asleep all summer loses nothing.
    max_age_days: Annotated[float, Meta(gt=0, le=3650)] = 90.0


class BatchConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_records: Annotated[int, Meta(ge=1, le=5000)] = 500
    max_bytes: Annotated[int, Meta(ge=1 * KiB, le=4 * MiB)] = 256 * KiB


class SendConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    interval_s: UpToADay = 60.0      # how often to look for records to send when idle
    timeout_s: UpToAnHour = 30.0      # one HTTP request, connect to last byte
    backoff_base_s: UpToADay = 5.0
    backoff_factor: Annotated[float, Meta(ge=1, le=100)] = 2.0
    backoff_cap_s: UpToADay = 900.0
    drain_batches_per_s: Annotated[float, Meta(gt=0, le=1000)] = 2.0  # backlog drain rate after an outage
    initial_delay_max_s: Annotated[float, Meta(ge=0, le=DAY_S)] = 30.0  # random delay before the first send
    gzip_min_bytes: Annotated[int, Meta(ge=0, le=4 * MiB)] = 1024


class EnrollConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    kind: DeviceKind = "laptop"
    # Keep the school's enrol secret (mode 0600) so that a 401 can be healed by enrolling again.
    keep_secret: bool = False


class RunnerConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # A successful probe run is reported (ProbeStatus ok=True) on a state change and every N runs.
    status_every: Annotated[int, Meta(ge=1, le=1_000_000)] = 60


class ProbeConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    # At most an hour: the collector refuses a record covering more than twice that (plus a
    # little, tice_wire.MAX_INTERVAL_S), and an interval may run over its length.
    interval_s: Annotated[float, Meta(gt=0, le=MAX_PROBE_INTERVAL_S)] = 60.0
    timeout_s: UpToAnHour = 30.0
    options: dict[str, Any] = {}


class AgentConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    server: str = ""          # collector base URL; empty = the one given to `enroll`
    state_dir: str = ""       # empty = the per-user default (see default_state_dir)
    ca_bundle: str = ""       # extra private CA (PEM); certificate verification is always on
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    send: SendConfig = field(default_factory=SendConfig)
    enroll: EnrollConfig = field(default_factory=EnrollConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    probes: dict[str, ProbeConfig] = {}

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser() if self.state_dir else default_state_dir()

    def enabled_probes(self) -> dict[str, ProbeConfig]:
        """Probes to run: the defaults unless disabled, plus every section that enables one."""
        out: dict[str, ProbeConfig] = {name: ProbeConfig() for name in DEFAULT_PROBES}
        for name, pc in self.probes.items():
            out[name] = pc
        return {name: pc for name, pc in out.items() if pc.enabled}


def default_state_dir(environ: dict[str, str] | None = None, platform: str = sys.platform) -> Path:
    env = os.environ if environ is None else environ
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "tice-agent"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tice-agent"


# msgspec says "Expected `float` > 0.0"; people reading a config want "expected a number > 0".
_TYPE_WORDS = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false",
               "object": "a table", "array": "a list", "null": "nothing"}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _words(msg: str) -> str:
    msg = re.sub(r"`(\w+)`", lambda m: _TYPE_WORDS.get(m.group(1), m.group(1)), msg)
    msg = re.sub(r"(\d+)\.0\b", r"\1", msg)
    return msg[:1].lower() + msg[1:]


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    node = raw
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        key, index = part
        try:
            node = node[key] if key else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, node


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML's own spelling: nan, inf, -inf (JSON would say null)
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(t: Any) -> str | None:
    """A config type in words, from msgspec's own type information (bounds included)."""
    mi = msgspec.inspect
    if isinstance(t, (mi.FloatType, mi.IntType)):
        words = "a number" if isinstance(t, mi.FloatType) else "an integer"
        bounds = [f"{op} {int(v) if float(v).is_integer() else v}" for op, v in
                  ((">", t.gt), (">=", t.ge), ("<", t.lt), ("<=", t.le)) if v is not None]
        return " ".join([words, " and ".join(bounds)]).strip()
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(str(v) for v in t.values)
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.StrType):
        return "a string"
    if isinstance(t, (mi.StructType, mi.DictType)):
        return "a table"
    return None


def _field_type(root: type, path: str) -> Any:
    t: Any = msgspec.inspect.type_info(root)
    for name in re.findall(r"\.([^.\[]+)", path):
        if isinstance(t, msgspec.inspect.StructType):
            t = next((f.type for f in t.fields if f.name == name), None)
        elif isinstance(t, msgspec.inspect.DictType):
            t = t.value_type
        else:
            return None
    return t


def _explain(err: msgspec.ValidationError, raw: Any, root: type, prefix: str = "") -> ConfigError:
    m = _AT.match(str(err))
    assert m is not None  # the pattern matches any string
    msg, path = m.group("msg"), m.group("path") or ""
    unknown = re.match(r"Object contains unknown field `(.+)`", msg)
    if unknown:
        key = ".".join(p for p in (prefix, path.lstrip("."), unknown.group(1)) if p)
        return ConfigError(f"{key}: unknown key")
    key = ".".join(p for p in (prefix, path.lstrip(".")) if p) or "(top level)"
    found, value = _lookup(raw, path)
    expected = _describe(_field_type(root, path))
    if expected is None:
        return ConfigError(f"{key}: {_words(msg)}")
    return ConfigError(f"{key}: expected {expected}, got {_show(value) if found else 'nothing'}")


def parse(raw: dict[str, Any]) -> AgentConfig:
    """Validate a decoded TOML document. Raises ConfigError naming the offending key."""
    raw = dict(raw)
    probes_raw = raw.pop("probes", {})
    if not isinstance(probes_raw, dict):
        raise ConfigError(f"probes: expected a table of [probes.<name>] sections, got {_show(probes_raw)}")
    try:
        base = msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as e:
        raise _explain(e, raw, AgentConfig) from None
    probes: dict[str, ProbeConfig] = {}
    for name, section in probes_raw.items():
        if not isinstance(section, dict):
            raise ConfigError(f"probes.{name}: expected a table, got {_show(section)}")
        own = {k: v for k, v in section.items() if k in PROBE_KEYS}
        try:
            pc = msgspec.convert(own, ProbeConfig)
        except msgspec.ValidationError as e:
            raise _explain(e, own, ProbeConfig, prefix=f"probes.{name}") from None
        options = {k: v for k, v in section.items() if k not in PROBE_KEYS}
        probes[name] = msgspec.structs.replace(pc, options=options)
    cfg = msgspec.structs.replace(base, probes=probes)
    _check_cross(cfg)
    return cfg


def _check_cross(cfg: AgentConfig) -> None:
    if cfg.server:
        check_server_url(cfg.server, key="server")
    if cfg.send.backoff_cap_s < cfg.send.backoff_base_s:
        raise ConfigError(f"send.backoff_cap_s: must be >= send.backoff_base_s ({cfg.send.backoff_base_s:g}), "
                          f"got {cfg.send.backoff_cap_s:g}")
    if cfg.ca_bundle and not Path(cfg.ca_bundle).expanduser().is_file():
        raise ConfigError(f"ca_bundle: no such file, got {_show(cfg.ca_bundle)}")


_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def check_server_url(url: str, *, key: str = "server") -> str:
    """HTTPS only; plain HTTP is accepted for a collector on this same machine (tests, demos)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return url.rstrip("/")
    raise ConfigError(f"{key}: expected an https:// URL (http:// only for localhost), got {_show(url)}")


def load(path: str | Path | None) -> AgentConfig:
    """Read and validate a TOML file; None means all defaults."""
    if path is None:
        return AgentConfig()
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse(raw)


def check_probes(cfg: AgentConfig, known: dict[str, Any]) -> None:
    """Every configured probe name must exist (only names in the file; defaults may be absent)."""
    for name in cfg.probes:
        if name not in known:
            raise ConfigError(f"probes.{name}: unknown probe (known: {', '.join(sorted(known)) or 'none'})")
