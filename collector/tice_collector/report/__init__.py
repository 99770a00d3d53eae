"""The evidence report: is the equipment bought for the schools used regularly in class?

Built from the daily rollups (one row per device and day, with its figures inside teaching
hours) and each school's calendar, never from raw records, so a city's school year renders in
seconds and the report still works once raw records have expired.

- `model`: the report's shape (msgspec types): JSON answer, CSV columns, OpenAPI schema
- `source`: the one module that reads the database (inventory, calendars, daily figures)
- `terms`: school terms (runs of school days between breaks), for the default period
- `compute`: the figures, as pure functions of what `source` read
- `svg`, `render`: charts and the HTML, CSV and JSON files
- `request`: the arguments both the command and the API take, checked once
"""
