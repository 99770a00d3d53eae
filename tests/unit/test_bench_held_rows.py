"""bench/held_rows.py's own code: argument checks, phases, quantiles, the collector's warnings
grouped, and the stored-against-acknowledged verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import held_rows


@pytest.mark.parametrize(("argv", "said"), [
    (["--held", "5", "--devices", "5"], "need 0 <= --held < --devices (5)"),
    (["--held", "-1"], "need 0 <= --held"),
    (["--devices", "0"], "--devices 0: need at least 1"),
    (["--hold-seconds", "0"], "--hold-seconds 0: need more than 0 to 3600 seconds"),
    (["--hold-seconds", "nan"], "--hold-seconds nan"),
    (["--warmup", "-1"], "--warmup -1: need 0 to 3600 seconds"),
    (["--records", "5001"], "--records 5001: need 1 to 5000"),
    (["--retry-after", "-2"], "--retry-after -2: need 0 to 3600 seconds"),
    (["--set", "bogus=1"], "'bogus' is not a collector setting"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        held_rows.parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert said in err
    assert "Traceback" not in err


def test_defaults_are_the_documented_run() -> None:
    args = held_rows.parse_args([])
    assert (args.devices, args.held, args.hold_seconds, args.warmup, args.settle, args.records) == (400, 5, 30, 10, 10, 10)
    assert args.retry_after is None and args.settings == {}


def test_a_request_in_flight_at_any_moment_of_the_hold_counts_in_the_hold() -> None:
    clock = held_rows.Clock(started=0.0, hold_from=10.0, hold_to=40.0)

    def phase(sent: float, seconds: float) -> str:
        return clock.phase(held_rows.Answer(held=False, sent=sent, seconds=seconds, what="200"))

    assert phase(5.0, 1.0) == "before"
    assert phase(9.5, 1.0) == "hold"  # sent before the rows were taken, answered after
    assert phase(39.9, 5.0) == "hold"
    assert phase(40.0, 0.1) == "after"


def test_quantile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert held_rows.quantile(values, 0.5) == 50.0
    assert held_rows.quantile(values, 0.99) == 99.0
    assert held_rows.quantile(values, 1.0) == 100.0
    assert held_rows.quantile([7.0], 0.99) == 7.0
    assert held_rows.quantile([], 0.5) != held_rows.quantile([], 0.5)  # nan: no request in that phase


def test_the_collectors_warnings_group_whatever_their_ids_and_counts(tmp_path: Path) -> None:
    log = tmp_path / "collector.log"
    log.write_text(
        "2026-12-01T03:00:00.000Z WARNING tice.writer: a device row held by another transaction past "
        "writer_lock_timeout_s (2 s): its requests answered 503 until it is released (devices "
        "0b0e9f5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b, 1b0e9f5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b)\n"
        "2026-12-01T03:00:01.000Z WARNING tice.writer: a device row held by another transaction past "
        "writer_lock_timeout_s (2 s): its requests answered 503 until it is released (devices "
        "2b0e9f5e-1c2d-4e5f-8a9b-0c1d2e3f4a5b)\n"
        "2026-12-01T03:00:02.000Z INFO    tice.app: listening\n")
    assert held_rows.warnings_of(log) == {
        "a device row held by another transaction past writer_lock_timeout_s (N s): its requests answered 503 "
        "until it is released (devices <ids>)": 2}


def check(**given: int) -> held_rows.Check:
    fields = dict(acknowledged=100, accepted=90, duplicates=10, rejected=0, rows=100, missing=0, twice=0,
                  unacknowledged_stored=0, unexplained=0, pending_batches=0)
    fields.update(given)
    return held_rows.Check(**fields, refused=[])


def test_rows_stored_by_a_flush_answered_503_late_are_no_mismatch() -> None:
    assert check().ok  # 10 acknowledged as duplicates: stored by an earlier send answered 503


@pytest.mark.parametrize("wrong", ["missing", "twice", "unexplained", "pending_batches"])
def test_a_missing_doubled_or_unexplained_row_or_an_unfinished_batch_is_a_mismatch(wrong: str) -> None:
    assert not check(**{wrong: 1}).ok
