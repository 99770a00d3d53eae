# The collector image: tice-collector installed with the exact versions of the lock
# (constraints.txt). docker-compose.yml builds it; `docker build -t tice-collector .` too.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/tice
COPY constraints.txt README.md ./
COPY wire ./wire
COPY agents ./agents
COPY collector ./collector
# The collector with its demo extra (`tice-collector demo` runs the agent's code): the three
# distributions of this repository, not its developer install.
RUN pip install -c constraints.txt ./wire ./agents './collector[demo]' \
    && useradd --system --create-home --home-dir /var/lib/tice-telemetry tice

USER tice
# Listen on every interface inside the container; the embedded PostgreSQL (when no
# TICE_DATABASE_URL is given, as for the demo) keeps its data in the tice user's home.
ENV TICE_LISTEN=0.0.0.0:8080 \
    TICE_DATA_DIR=/var/lib/tice-telemetry
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"]
CMD ["tice-collector", "serve"]
