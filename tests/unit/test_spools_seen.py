"""The writer's hint of which flushes carry only new records (collector/tice_collector/writer.py
SpoolsSeen): a plain insert for those, conflict handling straight away for the rest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tice_collector.writer import Job, SpoolsSeen

DEVICE, OTHER = uuid.uuid4(), uuid.uuid4()
SPOOL = uuid.uuid4()


def job(seqs: list[int], device: uuid.UUID = DEVICE, spool: uuid.UUID = SPOOL) -> Job:
    """A job as the handler makes it (in a running event loop: it carries a future)."""
    return Job(device_id=device, spool=spool, dropped=0, received_at=datetime.now(UTC), agent_version=None,
               records={}, size=len(seqs), seqs=seqs)


async def test_a_spool_not_seen_yet_is_not_known_to_be_new() -> None:
    assert not SpoolsSeen().all_new([job([1, 2, 3])])


async def test_seqs_above_what_the_spool_delivered_are_new_and_any_at_or_below_is_not() -> None:
    seen = SpoolsSeen()
    seen.note([job([1, 2, 3])])
    assert seen.all_new([job([4, 5])])
    assert not seen.all_new([job([3, 4])])  # a resend of 3
    assert not seen.all_new([job([7, 1])])  # an old seq anywhere in the batch
    assert not seen.all_new([job([4]), job([1], device=OTHER)])  # one unknown spool spoils the flush


async def test_a_seq_repeated_in_its_batch_is_not_known_to_be_new() -> None:
    seen = SpoolsSeen()
    seen.note([job([6])])
    assert not seen.all_new([job([7, 8, 8])])
    assert seen.all_new([job([7, 8, 9])])


async def test_one_spool_twice_in_a_flush_is_not_known_to_be_new() -> None:
    seen = SpoolsSeen()
    seen.note([job([1])])
    assert not seen.all_new([job([2]), job([3])])


async def test_the_highest_seq_is_kept_and_a_batch_without_records_changes_nothing() -> None:
    seen = SpoolsSeen()
    seen.note([job([5, 9, 7])])
    seen.note([job([2])])  # a late resend does not lower it
    seen.note([job([])])
    assert not seen.all_new([job([9])])
    assert seen.all_new([job([10]), job([], device=OTHER)])


async def test_past_its_limit_it_forgets_everything_and_only_loses_the_hint() -> None:
    seen = SpoolsSeen(limit=2)
    spools = [uuid.uuid4() for _ in range(3)]
    seen.note([job([1], spool=s) for s in spools])
    assert all(seen.all_new([job([2], spool=s)]) for s in spools)
    seen.note([job([2], spool=uuid.uuid4())])  # over the limit: cleared, then this one noted
    assert not any(seen.all_new([job([3], spool=s)]) for s in spools)
