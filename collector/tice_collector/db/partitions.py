"""Which months of the raw tables must have a partition (the tables are partitioned by month)."""

from __future__ import annotations

from datetime import date


def add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_range(today: date, retention_months: int) -> tuple[date, date]:
    """Months that must have a partition: the retention window, and three months ahead."""
    first = today.replace(day=1)
    return add_months(first, -retention_months), add_months(first, 3)
