"""The dashboards' day panels read `daily_usage` days as local days of the collector's time zone
(dashboards/grafana/common.py `timezone`), run against a real PostgreSQL."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from tests import grafana
from tests.helpers import SCHOOL, add_school
from tice_collector.calendar import SCHOOL_TZ

DAY = date(2026, 12, 1)


async def test_a_day_is_shown_from_its_local_midnight(db):
    """At 00:30 in Paris the day that has just begun is in the panels (before, read as UTC midnight,
    it came only after 01:00 in winter, 02:00 in summer), placed at its local midnight."""
    await add_school(db)
    device = await db.fetchval("INSERT INTO devices (serial, kind, school) VALUES ('S', 'laptop', $1) RETURNING id",
                               SCHOOL)
    await db.execute("INSERT INTO daily_usage (device_id, day, active_s, active_in_hours_s, projector_on_s, "
                     "modem_bytes) VALUES ($1, $2, 3600, 3600, 1800, 1000000)", device, DAY)
    midnight = datetime.combine(DAY, time(0), SCHOOL_TZ)
    checked = []
    for name, board in grafana.load_all().items():
        values = grafana.constants(board) | {"school": SCHOOL}
        for query, raw in ((q, q.text) for q in grafana.panel_queries(name, board) if q.kind == "sql"):
            if "daily_usage" not in raw:
                continue
            sql = grafana.expand_sql(raw, values, midnight - timedelta(days=7), midnight + timedelta(minutes=30))
            rows = await db.fetch(sql)
            assert [r["time"] for r in rows] == [midnight], (name, query.panel, rows)
            # The range is on the column itself, so an index on the day serves it (years of
            # daily rows are not read whole at every refresh).
            async with db.transaction():
                await db.execute("SET LOCAL enable_seqscan = off")
                plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + sql))
            assert re.search(r"Index Cond: \(.*\(day >= '[0-9-]+'::date\)", plan), (name, query.panel, plan)
            checked.append(query.panel)
    assert len(checked) >= 4, checked
