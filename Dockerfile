# syntax=docker/dockerfile:1
# billing-connector: a small image that runs the daemon (`billing-connector run`) as a non-root
# user. Build: docker build -t billing-connector .
# Run:   docker run --rm -v $PWD/config.yaml:/etc/billing-connector/config.yaml:ro \
#          -e SALESFORCE_CONSUMER_SECRET_FILE=/run/secrets/sf_secret ... -p 127.0.0.1:9090:9090 \
#          billing-connector
# The process is PID 1 and handles SIGTERM itself (finishes the record in progress, exits 0), so
# `docker stop` (SIGTERM, then SIGKILL after --time) needs no init shim.

# --- build: a wheel, so the runtime image holds no compiler, pip cache or source tree ----------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector
COPY mappings ./mappings
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime -------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BILLING_CONNECTOR_CONFIG=/etc/billing-connector/config.yaml
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-compile /wheels/*.whl \
 && groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --home-dir /var/lib/billing-connector \
      --shell /usr/sbin/nologin connector \
 && install -d -o connector -g connector -m 0700 /var/lib/billing-connector \
 && install -d -m 0755 /etc/billing-connector
# The default mappings next to the config; mount your own over /etc/billing-connector/mappings.
COPY --chown=root:root mappings /etc/billing-connector/mappings
USER connector
WORKDIR /var/lib/billing-connector
# /livez, /readyz and /metrics. Inside a container the port must listen beyond loopback to be
# reachable; publish it to the host's loopback only (-p 127.0.0.1:9090:9090) or a private network.
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9090/livez', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["billing-connector"]
CMD ["run", "--health-port", "9090", "--health-host", "0.0.0.0"]
