"""Operations as code: Prometheus configuration and alert rules (prometheus/), Alertmanager
configuration (alertmanager/), and Grafana provisioning and dashboards generated from Python
(grafana/: `python -m dashboards.grafana.build`)."""
