"""What the four probes share: the command helper, the sampler, the registry, the commented
example configurations; and the X11 parts against a real (virtual) X server where there is one."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tice_agent import probes
from tice_agent.probes import PROBES, load_all
from tice_agent.probes._run import CommandError, Sampler, excerpt, mask_identifiers, run_cmd
from tice_agent.probes.display import parse_xrandr
from tice_agent.probes.usage import X11Source

# The examples as installed: they ship with the package (package data).
EXAMPLES = sorted(Path(probes.__file__).parent.glob("*.example.toml"))
PROBE_KEYS = ("enabled", "interval_s", "timeout_s")  # the runner's own keys, not constructor options


@pytest.mark.parametrize(("text", "masked"), [
    # a 3G key's XML: IMSI (15 digits), ICCID (19-20), MSISDN, IMEI, the serial number
    ("<response><Imsi>208011234567890</Imsi><Iccid>8933011234567890123", "<response><Imsi>***</Imsi><Iccid>***"),
    ("<Msisdn>+33612345678</Msisdn><PhoneNumber>0612345678</PhoneNumber>",
     "<Msisdn>***</Msisdn><PhoneNumber>***</PhoneNumber>"),
    ("<SerialNumber>G4PDW17A12345678</SerialNumber><Imei>864537030000017</Imei>",
     "<SerialNumber>***</SerialNumber><Imei>***</Imei>"),
    # mmcli's JSON, key=value lines
    ('{"imsi": "208011234567890", "own-numbers": ["+33612345678"], "state": "registered"}',
     '{"imsi": "***", "own-numbers": "***", "state": "registered"}'),
    ("IMSI=208011234567890 ICCID: 89330112345678901234", "IMSI=*** ICCID: ***"),
    # digit runs anywhere: 6 digits or more, spaced, dotted or dashed like phone numbers
    ("call 06.12.34.56.78 or +33 6 12 34 56 78 or 0612345678", "call [10 digits] or [11 digits] or [10 digits]"),
    ("id 123456 then 12345", "id [6 digits] then 12345"),
    # not identifiers: a D-Bus answer, a date, a time
    ("got '(uint32 42137,)' on 2026-11-30 at 08:30:12", "got '(uint32 42137,)' on 2026-11-30 at 08:30:12"),
    ("MAC 0C:5B:8F:27:9A:64", "MAC [MAC]"),
    ("lamp 1500 h, error 100004", "lamp 1500 h, error [6 digits]"),
])
def test_identifiers_are_masked(text, masked):
    assert mask_identifiers(text) == masked


def test_excerpt_masks_before_it_cuts():
    """Cut at 60 characters, a digit run split by the cut is still masked whole."""
    text = "<response><Imsi>208011234567890</Imsi><Iccid>89330112345678901234</Iccid>"
    assert excerpt(text) == repr("<response><Imsi>***</Imsi><Iccid>***</Iccid>")
    assert excerpt("x" * 55 + "208011234567890") == repr("x" * 55 + "[15 d")
    assert excerpt("  plain garbage  ", 5) == "'plain'"


async def test_run_cmd_returns_stdout():
    assert await run_cmd([sys.executable, "-c", "print('ok')"]) == "ok\n"


async def test_run_cmd_reports_missing_failing_and_slow_commands():
    with pytest.raises(CommandError, match="no-such-command-here: not installed"):
        await run_cmd(["no-such-command-here"])
    with pytest.raises(CommandError, match="exit 3: boom"):
        await run_cmd([sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"])
    with pytest.raises(CommandError, match=r"no answer within 0\.2 s"):
        await run_cmd([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.2)


@pytest.mark.slow  # runs a child process and waits for its end
async def test_run_cmd_cancelled_kills_the_child(tmp_path):
    marker = tmp_path / "still-running"
    task = asyncio.create_task(run_cmd([sys.executable, "-c", f"import time; time.sleep(1); open({str(marker)!r}, 'w')"]))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.2)
    assert not marker.exists()


async def test_sampler_totals_add_up_to_the_elapsed_time():
    t = [0.0]
    answers = iter(["a", "b", "boom", "a"])

    async def classify(slot: float) -> str:
        answer = next(answers)
        if answer == "boom":
            raise OSError("source gone")
        return answer

    sampler = Sampler(classify, clock=lambda: t[0])
    for step in (5, 5, 5):
        t[0] += step
        await sampler.sample()
    t[0] += 2
    [(_, elapsed, totals)] = await sampler.drain()
    assert elapsed == 17 and totals == {"a": 7, "b": 5, "error": 5}
    t[0] += 3
    # Fresh totals after a drain (and the spent script fails: that slot is "error").
    [(_, elapsed, totals)] = await sampler.drain()
    assert (elapsed, totals) == (3, {"error": 3})


async def test_a_drain_waits_for_a_sample_in_progress():
    t = [0.0]
    gate = asyncio.Event()

    async def slow(slot: float) -> str:
        await gate.wait()
        return "x"

    sampler = Sampler(slow, clock=lambda: t[0])
    t[0] = 5
    pending = asyncio.create_task(sampler.sample())
    await asyncio.sleep(0)
    t[0] = 7
    draining = asyncio.create_task(sampler.drain())
    await asyncio.sleep(0)
    gate.set()
    await pending
    [(_, elapsed, totals)] = await draining
    assert elapsed == 7 and totals == {"x": 7}


async def test_the_sampling_task_stops_even_if_a_source_swallows_the_cancellation():
    started = asyncio.Event()

    async def stubborn(slot: float) -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # what 3.11's wait_for can do when a command ends just then
            pass
        return "x"

    sampler = Sampler(stubborn, every_s=0.5)
    sampler.start()
    await asyncio.wait_for(started.wait(), 2)
    await asyncio.wait_for(sampler.aclose(), 2)


def test_the_four_probes_are_registered():
    load_all()
    assert {"usage", "health", "network", "display"} <= set(PROBES)
    for name in ("usage", "health", "network", "display"):
        assert PROBES[name].name == name and PROBES[name].interval_s == 60  # type: ignore[attr-defined]


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_peripheral_probes_are_registered_and_the_agent_never_loads_aiohttp():
    """The agent installs no aiohttp: its probes and CLI must not import it (the simulators,
    which do, are test and demo code)."""
    code = ("import sys; import tice_agent.cli, tice_agent.runner, tice_agent.sender; from tice_agent.probes import load_all; "
            "import json; print(json.dumps(sorted(load_all()))); assert 'aiohttp' not in sys.modules, 'aiohttp imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {"hilink", "modemmanager", "pjlink", "disk"} <= set(json.loads(out.stdout))


def uncomment_defaults(text: str) -> str:
    """`# key = value` lines become settings; `## documentation` stays a comment."""
    return re.sub(r"^(\s*)# (\w+ = )", r"\1\2", text, flags=re.M)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
async def test_every_example_loads_and_its_defaults_build_the_probe(example):
    assert len(EXAMPLES) >= 4
    text = example.read_text()
    doc = tomllib.loads(text)
    [(name, section)] = doc["probes"].items()
    assert section == {}  # every default is commented out
    assert example.name == f"{name}.example.toml"
    options = tomllib.loads(uncomment_defaults(text))["probes"][name]
    assert options, "the example documents no option"
    load_all()
    probe = PROBES[name](**{k: v for k, v in options.items() if k not in PROBE_KEYS})
    assert probe.name == name and probe.interval_s == options["interval_s"]  # type: ignore[attr-defined]
    sampler = getattr(probe, "sampler", None)
    if sampler is not None:
        await sampler.aclose()


# ---------------------------------------------------------------- a real X server, where Xvfb is installed

@pytest.fixture
def xvfb():
    """A private Xvfb display. -noreset: a real desktop always has clients, while a bare Xvfb
    would reset (and zero its idle timer) each time its last client disconnects."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    # A display number no other server holds (its lock file names it).
    number = next(n for n in range(90 + os.getpid() % 500, 2000) if not os.path.exists(f"/tmp/.X{n}-lock"))
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket_path = f"/tmp/.X11-unix/X{number}"
    deadline = time.monotonic() + 30  # generous: a loaded machine starts Xvfb slowly
    while not os.path.exists(socket_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not os.path.exists(socket_path):
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.slow  # starts an X server (Xvfb)
async def test_x11_idle_time_from_a_real_server(xvfb):
    try:
        source = X11Source(environ={"DISPLAY": xvfb})
    except OSError as e:
        pytest.skip(str(e))  # libX11/libXss missing
    first = await source.idle_state()
    await asyncio.sleep(0.6)
    second = await source.idle_state()
    assert not first.locked and first.session_present
    assert second.idle_s >= first.idle_s + 0.5  # nobody touches a virtual display


async def test_xrandr_output_of_a_real_server(xvfb):
    if shutil.which("xrandr") is None:
        pytest.skip("xrandr is not installed")
    out = await run_cmd(["xrandr", "--display", xvfb, "--query"])
    assert parse_xrandr(out) == ["screen"]  # Xvfb's single output
