"""Grafana dashboards as code: one module per dashboard, rendered to grafana/dashboards/*.json
by `python -m dashboards.grafana.build` (a test fails when the committed JSON is stale)."""
