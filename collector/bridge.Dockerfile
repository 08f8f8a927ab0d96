# The hackagent-otel image: the HackAgent bridge by default (OTLP/HTTP in on 4328, and
# OTLP/gRPC on 4329 with `--grpc-port 4329`, as docker-compose.yml runs it behind the
# Collector's load_balancing exporter; HackAgent API records out), and the demo
# pipeline in docker-compose.yml.
#   docker build -f collector/bridge.Dockerfile -t hackagent-otel:local .
FROM python:3.11-slim

# HACKAGENT_OUTBOX_PATH: the bridge's durable outbox; every export it answers 200 is
# committed there first, and delivered from there to the HackAgent API (a volume in
# docker-compose.yml, so records survive a restart). On SIGTERM (`docker stop`) the
# bridge stops within 10 s, Docker's default grace period.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HACKAGENT_OUTBOX_PATH=/var/lib/hackagent-otel/outbox.sqlite3

WORKDIR /src
# Only what building the package needs; tests, docs and the Go build caches stay out.
COPY pyproject.toml README.md ./
COPY src ./src
# The bridge extra adds uvicorn and grpcio, which serve the bridge (unquoted: nothing
# here matches `.[bridge]` as a glob).
RUN pip install .[bridge] \
    && useradd --system --create-home --home-dir /home/hackagent hackagent \
    && mkdir -p /var/lib/hackagent-otel \
    && chown hackagent /var/lib/hackagent-otel

USER hackagent
WORKDIR /home/hackagent
EXPOSE 4328 4329
CMD ["hackagent-otel", "bridge", "--host", "0.0.0.0"]
