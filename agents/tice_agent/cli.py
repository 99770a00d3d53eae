"""tice-agent: enroll, run, once, status.

Exit codes: 0 success; 1 a runtime failure (enrolment refused, collector unreachable, another
daemon running); 2 a usage or configuration error, or damaged credentials, printed as one line
naming the key or the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from tice_agent import config as cfgmod
from tice_agent import identity
from tice_agent import state as st
from tice_agent.config import AgentConfig, ConfigError
from tice_wire import DEVICE_KINDS, MAX_SHORT_TEXT

log = logging.getLogger("tice.agent")

# The collector makes enrol secrets as this prefix and URL-safe base64 (collector/tice_collector/auth.py).
_SECRET_LINE = re.compile(r"tice_enr_[A-Za-z0-9_-]+")
_STDIN_MAX = 64 * 1024


def secret_from_text(text: str) -> str:
    """The enrol secret in what `--secret -` read: its one non-blank line, else the one line
    that is a `tice_enr_...` secret (a file saved from an older `enroll-secret create` also
    holds the banner line). Raises ConfigError when there is none, or more than one."""
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]  # BOM: Notepad
    if not lines:
        raise ConfigError("--secret -: standard input is empty; give the school's enrol secret "
                          "(tice-collector enroll-secret create --school UAI > secret.txt)")
    if len(lines) == 1:
        return lines[0]
    secrets = [line for line in lines if _SECRET_LINE.fullmatch(line)]
    if len(secrets) == 1:
        return secrets[0]
    found = "none is" if not secrets else f"{len(secrets)} are"
    raise ConfigError(f"--secret -: standard input has {len(lines)} lines and {found} an enrol secret "
                      "(tice_enr_...); give a file holding just the one secret")


# -- commands ---------------------------------------------------------------------------------

def check_state_dir(cfg: AgentConfig) -> Path:
    """The state directory's path; ConfigError when something else than a directory is there."""
    path = cfg.state_path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"state_dir: {path} is not a directory; set `state_dir` in the config to a directory "
                          "this user can write")
    return path


def check_writable_state_dir(cfg: AgentConfig) -> Path:
    """The state directory, created if need be, once a file could be written in it there;
    ConfigError `state_dir: cannot write ...` otherwise (a mistyped path, /proc, a read-only
    disk, another user's directory)."""
    path = check_state_dir(cfg)
    probe = path / f".write-test.{os.getpid()}"
    try:
        st.ensure_dir(path)
        st.write_private(probe, b"", durable=False)
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"state_dir: cannot write {path}: {e.strerror or e}; set `state_dir` in the config "
                          "to a directory this user can write") from None
    return path


def check_ca_bundle(cfg: AgentConfig) -> None:
    """A `ca_bundle` that TLS cannot load is a config error at start, not a failure at every send."""
    if not cfg.ca_bundle:
        return
    import ssl

    from tice_agent.sender import ssl_context

    try:
        ssl_context(cfg.ca_bundle)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"ca_bundle: cannot load {cfg.ca_bundle} as PEM certificates: "
                          f"{getattr(e, 'strerror', None) or e}") from None


def cmd_enroll(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from tice_agent.sender import EnrollError, enroll

    if not (args.server or cfg.server):
        raise ConfigError("--server: required (or set `server` in the config)")
    server = cfgmod.check_server_url(args.server or cfg.server, key="--server")
    if args.secret == "-":
        # A terminal gives one typed line; a pipe or a file is read whole (it may be the saved
        # output of `enroll-secret create`, banner included).
        secret = secret_from_text(sys.stdin.readline() if sys.stdin.isatty() else sys.stdin.read(_STDIN_MAX))
    else:
        secret = args.secret or os.environ.get("TICE_ENROLL_SECRET", "")
    if not 8 <= len(secret) <= 256:
        raise ConfigError("--secret: expected the school's enrol secret (8 to 256 characters)")
    if args.serial is not None and not args.serial.strip():
        raise ConfigError("--serial: empty; give the inventory's serial, or leave --serial out to use the "
                          "hardware serial (see docs/agent.md, One machine, one identity)")
    check_writable_state_dir(cfg)  # before enrolling: the new token must have a place to go
    check_ca_bundle(cfg)
    try:
        where = ""
        if args.serial is not None:
            serial = args.serial
            identity.ensure(cfg.state_path)  # the hardware fingerprint, to tell a copied state directory
        else:
            serial, source = identity.machine_serial(cfg.state_path)
            where = f" ({source})"
    except OSError as e:
        raise ConfigError(f"state_dir: cannot write {cfg.state_path}: {e.strerror or e}") from None
    if len(serial) > MAX_SHORT_TEXT:
        raise ConfigError(f"--serial: at most {MAX_SHORT_TEXT} characters")
    kind = args.kind or cfg.enroll.kind
    try:
        res = asyncio.run(enroll(server, secret, serial, kind, ca_bundle=cfg.ca_bundle,
                                 timeout_s=cfg.send.timeout_s))
    except EnrollError as e:
        hint = ""
        if e.status == 404:  # the enrol route is {server}/api/v1/enroll: a path in --server misses it
            hint = "; is --server the collector's base address (e.g. http://host:8080), without a path?"
        print(f"enrolment failed: {e}{hint}", file=sys.stderr)
        return 1
    try:
        before = st.load_credentials(cfg.state_path)
    except st.CredentialsError:
        before = None  # damaged: replaced below, nothing to compare with
    if before is not None and not _same_serial(before.serial, serial):
        # The collector cannot know this is the same machine: the old device stays.
        print(f"warning: this state directory was enrolled as serial {before.serial} (device {before.device_id}); "
              f"that device stays in the collector's inventory, and will look silent: retire it with "
              f"`tice-collector devices revoke {before.serial}`", file=sys.stderr)
    creds = st.Credentials(server=server, device_id=res.device_id, token=res.token, school=res.school,
                           serial=serial, kind=kind, enrolled_at=datetime.now(UTC),
                           secret=secret if cfg.enroll.keep_secret else None,
                           peripheral_salt=res.peripheral_salt)
    st.save_credentials(cfg.state_path, creds)
    # The token is not printed: it is a credential, stored 0600 in the state directory.
    print(f"enrolled: device {res.device_id}, school {res.school}, serial {serial}{where}; "
          f"credentials in {cfg.state_path / st.CREDENTIALS}")
    return 0


def _same_serial(a: str, b: str) -> bool:
    """The collector stores a serial trimmed and in upper case (collector/tice_collector/serials.py)."""
    return a.strip().upper() == b.strip().upper()


# Probes of peripherals (3G keys, projectors, backup disks) hash their identities with the
# deployment's salt given at enrolment; the projector's identity also names the school.
PERIPHERAL_PROBES = ("hilink", "modemmanager", "pjlink", "disk")


def _slots(cfg: AgentConfig, *, daemon: bool = False) -> list[Any]:
    from urllib.parse import urlsplit

    from tice_agent.probes import load
    from tice_agent.runner import build_slots

    creds = _credentials(cfg, daemon=daemon)
    server = cfg.server or (creds.server if creds else "")
    defaults: dict[str, dict[str, Any]] = {}
    if server:
        url = urlsplit(server)
        port = url.port or (443 if url.scheme == "https" else 80)
        defaults["network"] = {"collector": f"{url.hostname}:{port}"}
    salt = creds.peripheral_salt if creds else None
    enabled = set(cfg.enabled_probes())
    for name in PERIPHERAL_PROBES:
        defaults[name] = {"id_salt": salt or ""}
    defaults["pjlink"]["school"] = creds.school if creds else ""
    if daemon:  # `once` must leave no trace: only the daemon remembers the disks it saw
        defaults["disk"]["state_file"] = str(cfg.state_path / st.DISKS)
    slots = build_slots(cfg, load(enabled), defaults)  # only the probes configured: each costs memory
    if enabled & set(PERIPHERAL_PROBES) and not salt:
        log.warning("no peripheral salt from enrolment: 3G keys, projectors and disks are reported without "
                    "their identity until `tice-agent enroll` is run (again)")
    return slots


def _credentials(cfg: AgentConfig, *, daemon: bool) -> st.Credentials | None:
    """The credentials. Damaged ones stop a command (CredentialsError, exit 2), but not the
    daemon: it keeps collecting into its spool, says so, and sends as soon as `tice-agent
    enroll` writes new ones (a restart loop under systemd would help nobody)."""
    try:
        return st.load_credentials(cfg.state_path)
    except st.CredentialsError as e:
        if not daemon:
            raise
        log.error("%s; until then records are kept in the spool", e)
        return None


def cmd_run(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from tice_agent.runner import run_agent

    check_writable_state_dir(cfg)
    check_ca_bundle(cfg)
    slots = _slots(cfg, daemon=True)
    try:
        creds = st.load_credentials(cfg.state_path)
    except st.CredentialsError:
        creds = None  # said by _slots; the sender says it again in status.json
    if creds is None:
        if not (cfg.state_path / st.CREDENTIALS).exists():
            log.warning("not enrolled yet: records are kept in the spool until `tice-agent enroll` succeeds")
    else:
        try:
            identity.ensure(cfg.state_path)  # installs older than the identity file get one now
        except OSError as e:
            log.warning("cannot write %s: %s", cfg.state_path / identity.IDENTITY, e)
        for warning in identity.warnings(cfg.state_path, creds.serial):
            log.warning("identity: %s", warning)
    try:
        return asyncio.run(run_agent(cfg, slots))
    except KeyboardInterrupt:
        return 0


def cmd_once(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from tice_agent.runner import Runner

    check_state_dir(cfg)
    runner = Runner(_slots(cfg))

    async def once() -> list[Any]:
        try:
            return await runner.collect_all()
        finally:
            await runner.close_probes()

    records = asyncio.run(once())
    out = sys.stdout.buffer
    enc = msgspec.json.Encoder()
    for rec in records:
        out.write(enc.encode(rec) + b"\n")
    out.flush()
    return 0


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    secs = int((now - when).total_seconds())
    span = f"{secs} s" if abs(secs) < 120 else f"{secs // 60} min" if abs(secs) < 7200 else f"{secs // 3600} h"
    return f"{when.isoformat(timespec='seconds')} ({span} ago)" if secs >= 0 else \
        f"{when.isoformat(timespec='seconds')} (in {-secs} s)"


# Below this, the spool cannot count on storing a page of new records: `status` says "disk full".
DISK_FULL_BELOW = 64 * 1024


def _free_bytes(path: Path) -> int | None:
    import shutil

    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def cmd_status(cfg: AgentConfig, args: argparse.Namespace) -> int:
    from tice_agent.spool import read_stats

    sdir = check_state_dir(cfg)
    creds = st.load_credentials(sdir)
    status = st.load_status(sdir)
    stats = read_stats(sdir / st.SPOOL)
    running = False
    if (sdir / st.LOCK).exists():  # a daemon creates it; none ever ran where none is (or can be)
        lock = st.InstanceLock(sdir)
        try:
            running = not lock.acquire()
        except OSError:  # the lock is there but cannot be opened: another user's daemon
            running = True
        lock.release()
    s = status.sender
    sp = status.spool if running else st.SpoolStatus()  # a stopped daemon's memory is gone
    free = _free_bytes(sdir)
    disk_full = (free is not None and free < DISK_FULL_BELOW) or sp.trouble == "disk full"
    disk = {"free_bytes": free, "full": disk_full, "trouble": sp.trouble, "trouble_since": sp.trouble_since,
            "failures": sp.failures, "unsaved_dropped": sp.unsaved_dropped, "generated": sp.generated}
    view: dict[str, Any] = {
        "state_dir": str(sdir),
        "server": (cfg.server or (creds.server if creds else None)),
        "device_id": str(creds.device_id) if creds else None,
        "school": creds.school if creds else None,
        "daemon_running": running,
        "pid": status.pid if running else None,
        "sender": msgspec.to_builtins(s),
        "spool": _stats_dict(stats) if stats else None,
        "disk": msgspec.to_builtins(disk),
        "probes": msgspec.to_builtins(status.probes),
        "identity": {"serial": creds.serial if creds else None,
                     "warnings": identity.warnings(sdir, creds.serial if creds else None)},
    }
    if view["spool"] is not None and stats is not None and not stats.error:
        view["spool"]["dropped"] += sp.unsaved_dropped  # counted, even if only in the daemon's memory yet
    if args.json:
        sys.stdout.write(msgspec.json.encode(view).decode() + "\n")
        return 0
    now = datetime.now(UTC)
    print(f"state dir:      {sdir}")
    print(f"server:         {view['server'] or '(not set)'}")
    print(f"device:         {view['device_id'] or 'not enrolled'}" + (f" (school {view['school']})" if creds else ""))
    if creds:
        print(f"serial:         {creds.serial}")
    for warning in view["identity"]["warnings"]:
        print(f"WARNING:        {warning}")
    print(f"daemon:         {'running (pid ' + str(status.pid) + ')' if running else 'not running'}")
    print(f"last success:   {_ago(s.last_success_at, now)}")
    print(f"last attempt:   {_ago(s.last_attempt_at, now)}")
    if s.attempt:
        print(f"failing:        {s.attempt} attempts in a row; next {_ago(s.next_attempt_at, now)}")
    if s.last_error:
        print(f"last error:     {s.last_error}")
    if s.auth_failed:
        print("ACTION NEEDED:  the collector rejects this device's token; re-enrol with `tice-agent enroll`")
        print("                (another machine enrolling with the same serial does this too: a cloned disk image)")
    print(f"sent:           {s.batches_sent} batches, {s.records_sent} records "
          f"({s.records_duplicate} duplicates, {s.records_rejected} rejected)")
    where = f"{free} bytes free in {sdir}" if free is not None else f"free space of {sdir} unknown"
    if disk_full:
        since = f" since {sp.trouble_since.isoformat(timespec='seconds')}" if sp.trouble_since else ""
        print(f"disk:           DISK FULL: {where}{since}; records already stored are still sent, new records "
              "are dropped and counted")
    else:
        print(f"disk:           {where}")
    if sp.trouble and sp.trouble != "disk full":
        print(f"spool trouble:  cannot write: {sp.trouble} ({sp.failures} failures); new records are dropped "
              "and counted")
    if stats and stats.error:
        print(f"spool:          UNREADABLE ({stats.error}); the agent moves it aside when it starts, and sends "
              "what can still be read")
    elif stats:
        print(f"spool:          {stats.depth} waiting, {stats.in_flight} in flight, {stats.nbytes} bytes of "
              f"records in {stats.file_bytes} bytes on disk (spool {stats.spool})")
        unsaved = f", {sp.unsaved_dropped} of them counted in memory only" if sp.unsaved_dropped else ""
        print(f"dropped:        {stats.dropped + sp.unsaved_dropped} (spool full, too old, disk full or "
              f"unreadable{unsaved})")
        print(f"dead letters:   {stats.dead_letter}" + (f" (last: {stats.last_dead_letter})"
                                                       if stats.last_dead_letter else ""))
        if stats.corrupt_files:
            print(f"corrupt spools: {stats.corrupt_files} moved aside; {stats.salvaged} records read back from them "
                  f"({stats.salvaged_waiting} still to send), {stats.unreadable} unreadable (counted as dropped)")
    else:
        print("spool:          none yet")
    print("probes:" if status.probes else "probes:         no run recorded yet")
    for name, p in sorted(status.probes.items()):
        line = f"  {name:<10} {'ok  ' if p.ok else 'FAIL'} {_ago(p.at, now)}, {p.duration_s:.3f} s, " \
               f"{p.runs} runs, {p.failures} failures"
        print(line + (f": {p.error}" if p.error else ""))
        if p.note:
            print(f"             {p.note}")
    return 0


def _stats_dict(stats: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(stats)
    d["spool"] = str(d["spool"]) if d["spool"] else None
    return d


# -- parsing ----------------------------------------------------------------------------------

class _Version(argparse.Action):
    """`--version`: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the agent's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from tice_agent.sender import agent_version

        print(f"tice-agent {agent_version()}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like config errors
        self.print_usage(sys.stderr)
        print(f"usage error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="agent TOML config (default: $TICE_AGENT_CONFIG, else built-in defaults)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p = _Parser(prog="tice-agent", parents=[common], description="Tice Telemetry device agent")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    e = sub.add_parser("enroll", parents=[common], help="trade the school's enrol secret for a device token")
    e.add_argument("--server", help="collector URL, https://...")
    e.add_argument("--secret", default="",
                   help="the school's enrol secret; '-' reads it from stdin (a file saved from "
                        "`tice-collector enroll-secret create`); default $TICE_ENROLL_SECRET")
    e.add_argument("--serial", help="the inventory's serial (default: the hardware serial, else this install's "
                                    "own id; see docs/agent.md)")
    e.add_argument("--kind", choices=DEVICE_KINDS, help="device kind (default: config enroll.kind)")
    sub.add_parser("run", parents=[common], help="run the agent (probes, spool, sender)")
    sub.add_parser("once", parents=[common], help="run every enabled probe once; print JSON lines; send nothing")
    s = sub.add_parser("status", parents=[common], help="show the agent's state (works while it runs)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    return p


COMMANDS = {"enroll": cmd_enroll, "run": cmd_run, "once": cmd_once, "status": cmd_status}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = getattr(args, "config", None) or os.environ.get("TICE_AGENT_CONFIG") or None
    try:
        cfg = cfgmod.load(config_path)
        level = logging.DEBUG if getattr(args, "verbose", False) else getattr(logging, cfg.log_level.upper())
        logging.basicConfig(level=level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        code = COMMANDS[args.command](cfg, args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except BrokenPipeError:
        # The reader went away (`tice-agent status | head`): stop quietly, as the Python docs
        # advise (signal module, "Note on SIGPIPE"): what is left to flush goes to devnull, so
        # the interpreter's own flush at exit cannot fail again, and the exit code is 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except st.CredentialsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
