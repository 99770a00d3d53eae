"""The usage probe: idle-source parsers on captured output, the slot rule, when a source can be
trusted (logind's IdleHint on desktops that never set it, KDE's idle time stuck at 0 on
Wayland), unclassified time, and the probe's seconds per interval from scripted sources and a
fake clock."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from agent_testing import Clock, roundtrip, wait_until
from tice_agent.probes import _wayland
from tice_agent.probes._run import CommandError, ParseError
from tice_agent.probes.usage import (
    LOGIND_PROPS,
    NEVER_SET,
    STUCK_AT_ZERO,
    WAITING,
    IdleSample,
    KdeSource,
    LogindSource,
    MutterSource,
    UsageProbe,
    WaylandSource,
    Win32Source,
    X11Source,
    classify,
    logind_sample,
    parse_gdbus_bool,
    parse_gdbus_idletime,
    parse_gdbus_uint32,
    parse_loginctl_sessions,
    parse_loginctl_show,
    usage_note,
)
from tice_wire import Usage
from wayland_sim import Compositor

FIX = Path(__file__).resolve().parent / "fixtures" / "usage"
NOW = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)
IDLE_SINCE_US = 1795870000000000  # IdleSinceHint in loginctl-show-idle-locked.txt


def fixture(name: str) -> str:
    return (FIX / name).read_text()




class Scripted:
    """An idle source answering from a script; the last answer repeats."""

    def __init__(self, samples: list[IdleSample], name: str = "x11") -> None:
        self.samples, self.name, self.calls = list(samples), name, 0

    async def idle_state(self) -> IdleSample:
        self.calls += 1
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


class Failing:
    name = "mutter"

    def __init__(self) -> None:
        self.calls = 0

    async def idle_state(self) -> IdleSample:
        self.calls += 1
        raise CommandError("gdbus: exit 1")


async def run_interval(probe: UsageProbe, clock: Clock, looks: int, every: float = 5.0) -> Usage:
    for _ in range(looks - 1):
        clock.t += every
        await probe.sampler.sample()
    clock.t += every  # the last look is the one collect() takes
    [rec] = roundtrip(await probe.collect())
    assert isinstance(rec, Usage)
    return rec


# ---------------------------------------------------------------- parsers

def test_gdbus_idletime_is_milliseconds():
    assert parse_gdbus_idletime(fixture("gdbus-idletime.txt")) == 42137


@pytest.mark.parametrize(("name", "message"), [
    ("gdbus-garbage.txt", "expected '\\(uint64 N,\\)', got 'Error: GDBus.Error"),
    ("gdbus-empty.txt", "got ''"),
    ("gdbus-wrong-type.txt", "got '\\(uint32 42137,\\)'"),
])
def test_gdbus_idletime_rejects_anything_else(name, message):
    with pytest.raises(ParseError, match=message):
        parse_gdbus_idletime(fixture(name))


def test_gdbus_uint32():
    assert parse_gdbus_uint32(fixture("gdbus-kde-idletime.txt")) == 42137
    assert parse_gdbus_uint32(fixture("gdbus-kde-idletime-zero.txt")) == 0
    with pytest.raises(ParseError, match="GetSessionIdleTime: expected '\\(uint32 N,\\)', got '\\(uint64 42137,\\)'"):
        parse_gdbus_uint32(fixture("gdbus-idletime.txt"))


def test_gdbus_bool():
    assert parse_gdbus_bool(fixture("gdbus-screensaver-active.txt")) is True
    assert parse_gdbus_bool(fixture("gdbus-screensaver-inactive.txt")) is False
    with pytest.raises(ParseError, match="expected '\\(true,\\)' or '\\(false,\\)'"):
        parse_gdbus_bool(fixture("gdbus-idletime.txt"))


def test_loginctl_sessions_reads_the_id_column_only():
    assert parse_loginctl_sessions(fixture("loginctl-sessions.txt")) == ["2", "c1"]
    assert parse_loginctl_sessions(fixture("loginctl-sessions-v256.txt")) == ["3", "c2"]
    assert parse_loginctl_sessions("") == []
    with pytest.raises(ParseError, match="unexpected session id"):
        parse_loginctl_sessions("$(reboot) 1000 x seat0")


def test_loginctl_show_keeps_only_the_requested_properties():
    props = parse_loginctl_show(fixture("loginctl-show-extra-props.txt"))
    assert set(props) == set(LOGIND_PROPS)  # Name=, User=, RemoteHost= dropped
    assert "eleve" not in repr(props)
    assert parse_loginctl_show(fixture("loginctl-show-idle-locked.txt"))["LockedHint"] == "yes"


@pytest.mark.parametrize(("name", "message"), [
    ("loginctl-show-garbage.txt", "expected Key=Value, got 'Failed to get properties"),
    ("loginctl-show-empty.txt", "empty output"),
])
def test_loginctl_show_rejects_garbage_and_empty(name, message):
    with pytest.raises(ParseError, match=message):
        parse_loginctl_show(fixture(name))


def test_logind_sample_picks_the_active_graphical_user_session():
    active = parse_loginctl_show(fixture("loginctl-show-active.txt"))
    locked = parse_loginctl_show(fixture("loginctl-show-idle-locked.txt"))
    greeter = parse_loginctl_show(fixture("loginctl-show-greeter.txt"))
    tty = parse_loginctl_show(fixture("loginctl-show-tty.txt"))
    assert logind_sample([greeter, active], now_us=0) == IdleSample(0.0, locked=False, session_present=True)
    assert logind_sample([locked], now_us=IDLE_SINCE_US + 90_000_000) == IdleSample(90.0, locked=True)
    # IdleHint=no that never changed in this session (IdleSinceHint=0): KDE Plasma and COSMIC
    # on Wayland never set it, so it says nothing about the user.
    never = parse_loginctl_show(fixture("loginctl-show-never-set.txt"))
    assert logind_sample([never], now_us=0) == IdleSample(0.0, trusted=False, why=NEVER_SET)
    never_locked = parse_loginctl_show(fixture("loginctl-show-never-set-locked.txt"))
    assert classify(logind_sample([never_locked], now_us=0), 5.0) == "locked"  # LockedHint is a fact
    # Only a greeter, only a text console, or nothing at all: nobody is using the desktop.
    for sessions in ([greeter], [tty], []):
        assert logind_sample(sessions, now_us=0).session_present is False


def test_logind_sample_rejects_a_bad_idle_since():
    with pytest.raises(ParseError, match="IdleSinceHint: expected microseconds, got 'yesterday'"):
        logind_sample([parse_loginctl_show(fixture("loginctl-show-bad-since.txt"))], now_us=0)


@pytest.mark.parametrize(("sample", "slot", "bucket"), [
    (IdleSample(4.9), 5.0, "active"),          # input 4.9 s ago: inside the 5 s slot
    (IdleSample(5.0), 5.0, "idle"),            # exactly at the previous look: the previous slot's
    (IdleSample(0.0, locked=True), 5.0, "locked"),
    (IdleSample(0.0, session_present=False), 5.0, "no_session"),
    (IdleSample(0.0, trusted=False), 5.0, "unclassified"),    # never "active"
    (IdleSample(0.0, locked=True, trusted=False), 5.0, "locked"),
    (None, 5.0, "unclassified"),                               # no source answered
])
def test_slot_rule(sample, slot, bucket):
    assert classify(sample, slot) == bucket


# ---------------------------------------------------------------- sources

async def test_mutter_source_reads_idle_time_and_lock_state():
    answers = {"org.gnome.Mutter.IdleMonitor": fixture("gdbus-idletime.txt"),
               "org.gnome.ScreenSaver": fixture("gdbus-screensaver-active.txt")}

    async def gdbus(argv, timeout):
        return answers[argv[argv.index("--dest") + 1]]

    assert await MutterSource(gdbus).idle_state() == IdleSample(42.137, locked=True)
    del answers["org.gnome.ScreenSaver"]

    async def no_screensaver(argv, timeout):
        if "org.gnome.ScreenSaver" in argv:
            raise CommandError("gdbus: exit 1")
        return answers[argv[argv.index("--dest") + 1]]

    assert await MutterSource(no_screensaver).idle_state() == IdleSample(42.137, locked=False)


def kde_bus(idle: list[str], locked: str = "gdbus-screensaver-inactive.txt"):
    """A session bus with KDE's screen locker answering `idle` fixtures in turn (the last repeats)."""
    answers = list(idle)

    async def gdbus(argv, timeout):
        assert argv[:8] == ["gdbus", "call", "--session", "--dest", "org.kde.screensaver", "--object-path",
                            "/ScreenSaver", "--method"]
        if argv[8].endswith("GetActive"):
            return fixture(locked)
        return fixture(answers.pop(0) if len(answers) > 1 else answers[0])

    return gdbus


async def test_kde_source_trusts_its_idle_time_once_it_has_moved():
    # Plasma on Wayland: KWin's idle poller answers 0 forever; never taken for "active".
    stuck = KdeSource(kde_bus(["gdbus-kde-idletime-zero.txt"]))
    for _ in range(3):
        assert await stuck.idle_state() == IdleSample(0.0, trusted=False, why=STUCK_AT_ZERO)
    # Plasma on X11: a real idle time; afterwards a 0 is real too (input this very moment).
    moving = KdeSource(kde_bus(["gdbus-kde-idletime-zero.txt", "gdbus-kde-idletime.txt",
                                "gdbus-kde-idletime-zero.txt"]))
    assert (await moving.idle_state()).trusted is False
    assert await moving.idle_state() == IdleSample(42.137)
    assert await moving.idle_state() == IdleSample(0.0)
    # The lock state is a fact even while the idle time cannot be trusted.
    locked = KdeSource(kde_bus(["gdbus-kde-idletime-zero.txt"], "gdbus-screensaver-active.txt"))
    assert classify(await locked.idle_state(), 5.0) == "locked"


async def test_logind_source_asks_only_for_the_properties_it_needs():
    asked = []

    async def loginctl(argv, timeout):
        asked.append(argv)
        if argv[1] == "list-sessions":
            return fixture("loginctl-sessions.txt")
        return fixture({"2": "loginctl-show-idle-locked.txt", "c1": "loginctl-show-greeter.txt"}[argv[2]])

    sample = await LogindSource(loginctl, now_us=lambda: IDLE_SINCE_US + 30_000_000).idle_state()
    assert sample == IdleSample(30.0, locked=True)
    for argv in asked[1:]:
        assert [a for a in argv[3:] if a != "-p"] == list(LOGIND_PROPS)


def test_platform_sources_refuse_where_they_cannot_work():
    if not hasattr(__import__("ctypes"), "windll"):
        with pytest.raises(OSError, match="Windows only"):
            Win32Source()
    with pytest.raises(OSError, match="no DISPLAY"):
        X11Source(environ={})
    with pytest.raises(OSError, match="Wayland"):
        X11Source(environ={"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})


# ---------------------------------------------------------------- the probe

async def test_thirty_seconds_of_input_in_a_sixty_second_interval():
    clock = Clock()
    # 12 looks 5 s apart: input within the last 5 s at the first 6 looks, then none.
    script = [IdleSample(1.0)] * 6 + [IdleSample(6.0 + 5 * i) for i in range(6)]
    probe = UsageProbe(candidates=[lambda: Scripted(script)], clock=clock, now=lambda: NOW)
    rec = await run_interval(probe, clock, looks=12)
    assert (rec.duration_s, rec.active_s, rec.idle_s, rec.locked_s, rec.no_session_s, rec.unclassified_s) == \
        (60, 30, 30, 0, 0, 0)
    assert rec.at == NOW and rec.seq == 0 and rec.source == "x11"
    assert probe.note == "idle source: x11"
    await probe.sampler.aclose()


async def test_every_bucket_and_consecutive_intervals():
    clock = Clock()
    script = [IdleSample(1)] * 6 + [IdleSample(30)] * 3 + [IdleSample(0, locked=True)] * 2 + \
        [IdleSample(float("inf"), session_present=False)] + [IdleSample(2)] * 6
    times = iter([NOW, NOW.replace(minute=31), NOW.replace(minute=32)])
    probe = UsageProbe(sample_every_s=5, candidates=[lambda: Scripted(script)], clock=clock, now=lambda: next(times))
    first = await run_interval(probe, clock, looks=12)
    assert (first.duration_s, first.active_s, first.idle_s, first.locked_s, first.no_session_s) == (60, 30, 15, 10, 5)
    # The next interval starts where the first ended, with fresh totals.
    second = await run_interval(probe, clock, looks=6)
    assert (second.at, second.duration_s, second.active_s) == (NOW.replace(minute=31), 30, 30)
    await probe.sampler.aclose()


async def test_the_first_source_that_answers_is_kept():
    clock = Clock()
    failing, working = Failing(), Scripted([IdleSample(0)], name="logind")
    probe = UsageProbe(candidates=[lambda: failing, lambda: working], clock=clock)
    rec = await run_interval(probe, clock, looks=4)
    assert rec.source == "logind" and rec.active_s == 20
    assert failing.calls == 1 and working.calls == 4  # tried once, not at every look
    await probe.sampler.aclose()


async def test_a_source_that_stops_answering_is_replaced_once_per_interval():
    clock = Clock()

    class Dies(Scripted):
        async def idle_state(self) -> IdleSample:
            self.calls += 1
            if self.calls > 2:
                raise OSError("cannot open display :0")
            return IdleSample(0)

    x11, logind = Dies([], "x11"), Scripted([IdleSample(0, session_present=False)], "logind")
    probe = UsageProbe(candidates=[lambda: x11, lambda: logind], clock=clock)
    rec = await run_interval(probe, clock, looks=6)
    # 2 looks active on X11; the logout makes X11 fail and logind says: no session.
    assert (rec.active_s, rec.no_session_s, rec.duration_s) == (10, 20, 30)
    assert rec.source == "logind"
    await probe.sampler.aclose()


async def test_without_any_source_the_time_is_unclassified():
    async def no_command(argv, timeout):
        raise CommandError(f"{argv[0]}: not installed")

    clock = Clock()
    failing = Failing()
    probe = UsageProbe(candidates=[lambda: failing, lambda: MutterSource(no_command), lambda: LogindSource(no_command)],
                       clock=clock)
    rec = await run_interval(probe, clock, looks=12)
    assert rec.source == "none" and rec.duration_s == 60 and rec.unclassified_s == 60
    assert rec.active_s == rec.idle_s == rec.locked_s == rec.no_session_s == 0
    assert probe.note == "idle source: none; cannot classify 60 of 60 s: no idle source answered"
    assert failing.calls == 1  # one attempt per interval, not one per look
    await run_interval(probe, clock, looks=2)
    assert failing.calls == 2
    await probe.sampler.aclose()


async def test_through_logind_with_captured_output_no_user_name_leaves():
    async def loginctl(argv, timeout):
        if argv[1] == "list-sessions":
            return fixture("loginctl-sessions.txt")
        return fixture({"2": "loginctl-show-idle-locked.txt", "c1": "loginctl-show-greeter.txt"}[argv[2]])

    clock = Clock()
    probe = UsageProbe(candidates=[lambda: LogindSource(loginctl, now_us=lambda: IDLE_SINCE_US)], clock=clock)
    rec = await run_interval(probe, clock, looks=2)
    assert rec.source == "logind" and rec.locked_s == 10
    assert b"eleve" not in msgspec.json.encode(rec)
    await probe.sampler.aclose()


@pytest.mark.slow  # waits for sampling rounds in real time
async def test_background_sampling_runs_between_collects():
    probe = UsageProbe(sample_every_s=0.5, candidates=[lambda: Scripted([IdleSample(0)])])
    await probe.collect()  # starts the sampler
    import asyncio

    await asyncio.sleep(1.3)
    [rec] = roundtrip(await probe.collect())
    # At least the time slept (no upper bound: a loaded machine oversleeps); all of it sampled active.
    assert rec.duration_s >= 1.2 and rec.active_s == pytest.approx(rec.duration_s)
    await probe.sampler.aclose()


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown usage sources \\['keylogger'\\]"):
        UsageProbe(sources=["keylogger"])
    with pytest.raises(ValueError, match="sample_every_s must be between"):
        UsageProbe(sample_every_s=0)
    assert UsageProbe(interval_s=120, sources=["logind"]).interval_s == 120


# ---------------------------------------------------------------- desktops that never set IdleHint

def session_bus_and_logind(kde: list[str] | None, logind_show: str):
    """`gdbus` and `loginctl` as a Wayland session answers them: Mutter absent, KDE's screen
    locker answering `kde` fixtures (None: absent), logind showing one session."""
    kde_gdbus = kde_bus(kde) if kde is not None else None

    async def run(argv, timeout):
        if argv[0] == "gdbus":
            dest = argv[argv.index("--dest") + 1]
            if dest == "org.kde.screensaver" and kde_gdbus is not None:
                return await kde_gdbus(argv, timeout)
            raise CommandError(f"gdbus: exit 1: Error: GDBus.Error: The name {dest} was not provided")
        if argv[1] == "list-sessions":
            return "2 1000 eleve seat0 tty2\n"
        return fixture(logind_show)

    wayland = {"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    return [lambda: X11Source(environ=wayland), lambda: MutterSource(run), lambda: KdeSource(run),
            lambda: LogindSource(run, now_us=lambda: IDLE_SINCE_US)]


@pytest.mark.parametrize(("desktop", "kde", "source", "why"), [
    ("KDE Plasma on Wayland", ["gdbus-kde-idletime-zero.txt"], "kde", STUCK_AT_ZERO),
    ("COSMIC on Wayland", None, "logind", NEVER_SET),
])
async def test_thirty_minutes_left_alone_are_never_active(desktop, kde, source, why):
    clock = Clock()
    probe = UsageProbe(candidates=session_bus_and_logind(kde, "loginctl-show-never-set.txt"), clock=clock)
    # 30 min left alone: thirty 1-minute intervals of looks 5 s apart.
    records = [await run_interval(probe, clock, looks=12) for _ in range(30)]
    totals = [sum(getattr(r, f) for r in records) for f in ("duration_s", "active_s", "idle_s", "unclassified_s")]
    assert totals == [1800, 0, 0, 1800], desktop
    assert {r.source for r in records} == {source}
    assert probe.note == f"idle source: {source}; cannot classify 60 of 60 s: {why}"
    await probe.sampler.aclose()


async def test_kde_on_x11_is_classified():
    clock = Clock()
    bus = session_bus_and_logind(["gdbus-kde-idletime-zero.txt", "gdbus-kde-idletime.txt"],
                                 "loginctl-show-never-set.txt")
    probe = UsageProbe(candidates=bus[2:], clock=clock)  # kde, logind
    rec = await run_interval(probe, clock, looks=4)
    # First look: 0 not yet trusted; then 42 s idle at every look.
    assert (rec.unclassified_s, rec.idle_s, rec.active_s, rec.source) == (5, 15, 0, "kde")
    await probe.sampler.aclose()


async def test_a_trusted_source_is_preferred_and_an_untrusted_one_retried_each_interval():
    clock = Clock()
    untrusted = Scripted([IdleSample(0.0, trusted=False, why="never set")], name="logind")
    later = Scripted([IdleSample(1.0)], name="mutter")
    available = {"mutter": False}

    def mutter():
        if not available["mutter"]:
            raise OSError("no session bus yet")
        return later

    probe = UsageProbe(candidates=[mutter, lambda: untrusted], clock=clock)
    first = await run_interval(probe, clock, looks=6)
    assert (first.source, first.unclassified_s, first.active_s) == ("logind", 30, 0)
    available["mutter"] = True  # the session bus came up
    second = await run_interval(probe, clock, looks=6)
    assert (second.source, second.unclassified_s, second.active_s) == ("mutter", 0, 30)
    await probe.sampler.aclose()


def test_usage_note():
    assert usage_note("x11", 0, 60, {}) == "idle source: x11"
    assert usage_note("logind", 45.2, 60, {NEVER_SET: 45.2}) == \
        f"idle source: logind; cannot classify 45 of 60 s: {NEVER_SET}"


# ---------------------------------------------------------------- ext-idle-notify-v1 (KDE, COSMIC on Wayland)

def test_wayland_strings_on_the_wire():
    packed = _wayland.pack_string("wl_seat")
    assert packed == b"\x08\x00\x00\x00wl_seat\x00" if sys.byteorder == "little" else True
    assert _wayland.unpack_string(packed + b"rest", 0) == ("wl_seat", 12)
    with pytest.raises(ParseError, match="runs past its message"):
        _wayland.unpack_string(packed[:9], 0)


def test_wayland_socket_path(tmp_path):
    assert _wayland.socket_path({"XDG_RUNTIME_DIR": "/run/user/1000", "WAYLAND_DISPLAY": "wayland-0"}) == \
        Path("/run/user/1000/wayland-0")
    assert _wayland.socket_path({"WAYLAND_DISPLAY": "/tmp/w"}) == Path("/tmp/w")
    # A systemd user unit without the session's environment: the one socket there is.
    (tmp_path / "wayland-1").touch()
    (tmp_path / "wayland-1.lock").touch()
    assert _wayland.socket_path({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "wayland-1"
    (tmp_path / "wayland-2").touch()
    with pytest.raises(OSError, match="2 wayland sockets"):
        _wayland.socket_path({"XDG_RUNTIME_DIR": str(tmp_path)})
    with pytest.raises(OSError, match="not a Wayland session"):
        _wayland.socket_path({})


@pytest.fixture
async def compositor(tmp_path):
    sim = await Compositor(tmp_path / "wayland-0").start()
    yield sim
    await sim.close()


def wayland_source(sim: Compositor, clock: Clock, timeout_s: float = 5.0) -> WaylandSource:
    return WaylandSource(timeout_s=timeout_s, environ={"WAYLAND_DISPLAY": str(sim.path)}, clock=clock)


async def test_wayland_source_follows_the_compositors_idle_notification(compositor):
    clock = Clock()
    source = wayland_source(compositor, clock)
    # A new notification is never idle at first: the first period cannot tell.
    assert await source.idle_state() == IdleSample(0.0, trusted=False, why=WAITING)
    assert compositor.binds == [("wl_seat", 1), ("ext_idle_notifier_v1", 2)]
    assert [(n.timeout_ms, n.input_only) for n in compositor.notifications] == [(5000, True)]
    clock.t += 5
    assert await source.idle_state() == IdleSample(0.0)  # not idle: input within the last 5 s
    compositor.idled()  # 5 s without input
    await wait_until(lambda: source._watch is not None and source._watch.idle, "the idled event")
    clock.t += 10
    assert await source.idle_state() == IdleSample(15.0)  # idled 10 s ago, after 5 s without input
    compositor.resumed()
    await wait_until(lambda: source._watch is not None and not source._watch.idle, "the resumed event")
    assert await source.idle_state() == IdleSample(0.0)
    compositor.idled()  # input, then idle again, all between two looks: there was input
    compositor.resumed()
    compositor.idled()
    await wait_until(lambda: source._watch is not None and source._watch.resumes == 2 and source._watch.idle,
                     "idled, resumed, idled")
    assert await source.idle_state() == IdleSample(0.0)
    clock.t += 5
    assert (await source.idle_state()).idle_s == 10.0
    await source.aclose()


async def test_wayland_source_on_other_compositors(tmp_path):
    clock = Clock()
    v1 = await Compositor(tmp_path / "v1", idle_notify_version=1).start()
    mutter = await Compositor(tmp_path / "mutter", idle_notify_version=None).start()
    try:
        old = wayland_source(v1, clock)
        await old.idle_state()
        assert [(n.timeout_ms, n.input_only) for n in v1.notifications] == [(5000, False)]
        await old.aclose()
        with pytest.raises(OSError, match="no ext_idle_notifier_v1"):
            await wayland_source(mutter, clock).idle_state()
    finally:
        await v1.close()
        await mutter.close()
    with pytest.raises(OSError):  # nobody listens there any more
        await wayland_source(v1, clock).idle_state()


async def test_wayland_source_after_the_compositor_hangs_up(compositor):
    clock = Clock()
    source = wayland_source(compositor, clock)
    await source.idle_state()
    compositor.hang_up()  # logout, compositor restart
    await wait_until(lambda: source._watch is not None and source._watch.closed, "the hang-up")
    with pytest.raises(OSError, match="closed the connection"):
        await source.idle_state()
    assert (await source.idle_state()).trusted is False  # a new connection, a new first period
    compositor.error("ext_idle_notification_v1@8: invalid timeout")
    await wait_until(lambda: source._watch is not None and source._watch.closed, "the protocol error")
    with pytest.raises(OSError, match="invalid timeout"):
        await source.idle_state()
    await source.aclose()


async def test_kde_plasma_on_wayland_is_classified_by_the_compositor(compositor):
    clock = Clock()
    bus = session_bus_and_logind(["gdbus-kde-idletime-zero.txt"], "loginctl-show-never-set.txt")
    probe = UsageProbe(candidates=[bus[0], bus[1], lambda: wayland_source(compositor, clock), bus[2], bus[3]],
                       clock=clock)
    # 12 looks 5 s apart: the first cannot tell; input until the 6th look, then nobody.
    for look in range(12):
        if look == 6:
            compositor.idled()
            await wait_until(lambda: compositor.notifications and probe._source is not None
                             and probe._source._watch.idle, "the idled event")  # type: ignore[attr-defined]
        clock.t += 5
        if look < 11:
            await probe.sampler.sample()
    [rec] = roundtrip(await probe.collect())
    assert (rec.source, rec.duration_s, rec.unclassified_s, rec.active_s, rec.idle_s) == ("wayland", 60, 5, 25, 30)
    assert probe.note == f"idle source: wayland; cannot classify 5 of 60 s: {WAITING}"
    await probe.aclose()
