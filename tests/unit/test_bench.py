"""The ingest benchmark's own code: report templates, wrk's result line, py-spy profiles."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from bench import _common, _pyspy, _shapes, _wrk
from tice_collector.db.records import TABLES
from tice_wire import batch_decoder

FIXTURE = Path(__file__).parents[1] / "fixtures" / "bench" / "pyspy_raw.txt"


def render(shape: _shapes.Shape, path: Path, device: uuid.UUID, spool: uuid.UUID, seq0: int, at: str) -> bytes:
    """A request body built as bench/wrk_reports.lua builds it (Lua's string.format and
    Python's % agree on %s, %d and %%)."""
    lines = path.read_text().splitlines()
    envelope = lines[0].split("\t")[1]
    kinds = [line.split("\t")[1] for line in lines[1:]]
    records = ",".join(kinds[i % len(kinds)] % (seq0 + i + 1, at) for i in range(shape.records))
    return (envelope % (device, spool, "2026-11-30T08:00:00Z", records)).encode()


@pytest.mark.parametrize("name", list(_shapes.SHAPES))
def test_every_shape_renders_a_batch_the_collector_accepts(name: str, tmp_path: Path) -> None:
    shape = _shapes.SHAPES[name]
    path = tmp_path / "templates.txt"
    _shapes.write_templates(path, shape)
    device, spool = uuid.uuid4(), uuid.uuid4()
    batch = batch_decoder().decode(render(shape, path, device, spool, 41, "2026-11-30T07:00:00Z"))
    assert (batch.device_id, batch.spool, batch.agent_version) == (device, spool, "bench")
    assert len(batch.records) == shape.records
    at = datetime(2026, 11, 30, 7, tzinfo=UTC)
    for i, rec in enumerate(batch.records):
        kind = shape.kinds[i % len(shape.kinds)]
        assert rec == _shapes.example(kind, seq=42 + i, at=at)


def test_the_mixed_shapes_carry_one_record_of_each_kind_an_agent_sends_each_minute() -> None:
    assert _shapes.SHAPES["mixed4"].kinds == ("usage", "health", "link", "display")
    assert _shapes.SHAPES["mixed4"].records == 4
    assert _shapes.SHAPES["backlog500"].records == 500
    assert _shapes.SHAPES["usage10"].kinds == ("usage",)


@pytest.mark.parametrize("kind", ["usage", "health", "link", "display"])
def test_the_line_protocol_point_carries_the_same_fields(kind: str) -> None:
    rec = _shapes.example(kind)
    line = _shapes.line_template(rec) % ("dev-1", "spool-1", 7, 1_790_000_000, 5_000_000)
    m = re.fullmatch(r"(\w+),device=dev-1,spool=spool-1 (\S+) (\d+)", line)
    assert m, line
    assert m[1] == kind
    assert m[3] == "1790000000005000000"  # nanoseconds
    fields = dict(part.split("=", 1) for part in m[2].split(","))
    expected = {n for n in rec.__struct_fields__ if n != "at" and getattr(rec, n) is not None}
    assert set(fields) == expected
    assert fields["seq"] == "7i"
    for name, text in fields.items():
        value = getattr(rec, name) if name != "seq" else 7
        if isinstance(value, bool):
            assert text == str(value).lower()
        elif isinstance(value, int):
            assert text == f"{value}i"
        elif isinstance(value, float):
            assert float(text) == value
        elif isinstance(value, str):
            assert text == f'"{value}"'


def test_copy_rows_fit_the_tables_the_collector_writes() -> None:
    shape = _shapes.SHAPES["mixed4"]
    devices = [uuid.uuid4(), uuid.uuid4()]
    rows = _shapes.copy_rows(shape, devices, 8, datetime(2026, 11, 30, 8, tzinfo=UTC))
    assert [t.name for t, _ in rows[:4]] == ["usage_records", "health_records", "link_records", "display_records"]
    for table, row in rows:
        assert table in TABLES.values()
        assert len(row) == len(table.columns)
        assert row[table.columns.index("device_id")] in devices
    assert [row[t.columns.index("seq")] for t, row in rows] == list(range(8))


WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8086/write?db=bench
  2 threads and 32 connections
  Latency Distribution
     50%    4.14ms
  28660 requests in 10.01s, 2.16MB read
BENCH requests=28660 duration_us=10009447 status_errors=3 socket_errors=1 p50_us=4143 p90_us=13351 p99_us=101779 p999_us=128950 max_us=129960 late=12 late_max_ms=5.8
Requests/sec:   2863.17
"""


def test_wrk_result_line_is_read_in_milliseconds_and_seconds() -> None:
    r = _wrk.parse(WRK_OUTPUT, cpu_s=0.25)
    assert (r.requests, r.status_errors, r.socket_errors, r.ok) == (28660, 3, 1, 28657)
    assert r.duration_s == pytest.approx(10.009447)
    assert (r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms) == (4.143, 101.779, 128.95, 129.96)
    assert (r.late, r.late_max_ms, r.cpu_s) == (12, 5.8, 0.25)


def test_wrk_output_without_the_result_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no BENCH line"):
        _wrk.parse("Running 10s test @ http://127.0.0.1:1/\nunable to connect\n")


def test_a_pyspy_profile_is_split_into_idle_areas_and_top_functions() -> None:
    threads = _pyspy.parse(FIXTURE.read_text())
    assert list(threads) == ["thread (31851): MainThread"]
    stacks = threads["thread (31851): MainThread"]
    s = _pyspy.summarize(threads)
    idle = sum(c for frames, c in stacks if frames[-1] == "EpollSelector.select (selectors.py)")
    assert (s.samples, s.idle, s.other_threads_busy) == (774, idle, 0)
    assert idle > 0
    busy = _pyspy.busy(stacks)
    areas = _pyspy.areas(stacks)
    assert sum(c for _, c, _ in areas) == _pyspy.total(busy) == s.samples - s.idle
    assert sum(sends for _, _, sends in areas) == _pyspy.in_socket_send(stacks) > 0
    names = [name for name, _, _ in areas]
    for area in ("writer: COPY into staging (asyncpg copy_records_to_table)", "writer: devices_touch",
                 "ingest: decode + validate (msgspec)", "metrics: prometheus-client (labels, inc, observe)"):
        assert area in names
    top = _pyspy.top_self(busy, 3)
    assert top[0] == ("_SelectorSocketTransport.write (asyncio/selector_events.py)", _pyspy.in_socket_send(stacks))
    cumulative = dict(_pyspy.top_cumulative(busy, 50))
    assert not any("cli.py" in f or "run_forever" in f for f in cumulative)
    assert cumulative["Writer._flush (collector/tice_collector/writer.py)"] > cumulative["Writer._touch_devices (collector/tice_collector/writer.py)"]


def test_the_command_line_frames_of_the_cli_package_are_start_up_not_collector_code() -> None:
    start = ("<module> (<frozen runpy>)", "<module> (collector/tice_collector/cli/__main__.py)",
             "main (collector/tice_collector/cli/__init__.py)", "cmd_serve (collector/tice_collector/cli/serve.py)",
             "run (asyncio/runners.py)", "BaseEventLoop._run_once (asyncio/base_events.py)",
             "Handle._run (asyncio/events.py)")
    stacks = [((*start, "RequestHandler.start (aiohttp/web_protocol.py)"), 3),
              ((*start, "error_middleware (collector/tice_collector/middlewares.py)"), 2)]
    assert [(name, n) for name, n, _ in _pyspy.areas(stacks)] == [
        ("collector: middlewares, other collector code", 2), ("HTTP: aiohttp (parse, respond, stream)", 3)]
    assert dict(_pyspy.top_cumulative(stacks, 10)) == {
        "RequestHandler.start (aiohttp/web_protocol.py)": 3,
        "error_middleware (collector/tice_collector/middlewares.py)": 2}


def test_under_uvloop_the_loop_with_no_python_frame_above_the_runner_is_idle() -> None:
    # uvloop waits for I/O in C: py-spy's innermost Python frame is then the runner's.
    assert _pyspy.is_idle(("<module> (collector/tice_collector/cli.py)", "Runner.run (asyncio/runners.py)"))
    assert not _pyspy.is_idle(("Runner.run (asyncio/runners.py)", "_ingest (collector/tice_collector/routes/ingest.py)"))
    assert not _pyspy.is_idle(("Runner.run (asyncio/runners.py)", "Runner.run_forever (other/runners.py)"))


def test_a_line_that_is_not_a_stack_is_named() -> None:
    with pytest.raises(ValueError, match="line 2 is not a py-spy raw stack"):
        _pyspy.parse("thread (1): MainThread;main (x.py) 3\nWrote raw flamegraph data\n")


def test_the_event_loop_thread_is_the_one_running_the_loop() -> None:
    text = ("thread (1): MainThread;BaseEventLoop.run_forever (asyncio/base_events.py);work (a.py) 5\n"
            "thread (2): worker;Thread.run (threading.py);spin (b.py) 9\n")
    threads = _pyspy.parse(text)
    s = _pyspy.summarize(threads)
    assert (s.thread, s.samples, s.other_threads_busy) == ("thread (1): MainThread", 5, 9)


def test_templates_are_json_with_placeholders_only_where_expected() -> None:
    rec = _shapes.example("health")
    tpl = _shapes.json_template(rec)
    assert tpl.count("%d") == 1 and tpl.count('"%s"') == 1
    decoded = msgspec.json.decode(tpl % (3, "2026-11-30T07:00:00Z"))
    assert decoded["type"] == "health" and decoded["seq"] == 3


def test_ctrl_c_stops_a_bench_with_one_line_and_exit_code_130(capsys: pytest.CaptureFixture[str]) -> None:
    cleaned = []

    def main() -> None:
        try:
            raise KeyboardInterrupt
        finally:
            cleaned.append(True)  # what the bench started is stopped before the line

    with pytest.raises(SystemExit) as stopped:
        _common.run(main)
    assert stopped.value.code == 130
    assert cleaned == [True]
    assert capsys.readouterr().err == "stopped (Ctrl-C)\n"


def test_set_options_must_name_a_collector_setting(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="ingest.py")
    assert _common.setting_overrides(ap, ["writer_tasks=1", "workers=2"]) == {"writer_tasks": "1", "workers": "2"}
    for bad, said in (("nokey", "expected KEY=VALUE"), ("bogus=1", "'bogus' is not a collector setting")):
        with pytest.raises(SystemExit) as stopped:
            _common.setting_overrides(ap, [bad])
        assert stopped.value.code == 2
        assert said in capsys.readouterr().err
