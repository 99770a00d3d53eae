from __future__ import annotations

from tice_collector.jobs import all_jobs


def test_every_job_keeps_its_own_advisory_lock_key() -> None:
    # The keys are those the registry's order gave before they were written on each job:
    # a replica of the previous version and one of this version still exclude each other.
    keys = {name: spec.lock_key for name, spec in all_jobs().items()}
    assert keys == {"rollup": 0, "detect": 1, "snapshot": 2, "retention": 3, "identity": 4, "google": 5}
