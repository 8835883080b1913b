# The harvester in a container: a slim Python, a user without privileges, and the
# `harvester` console script as the entrypoint (arguments are its subcommand and flags).
#
#   docker build -t k6-harvester .
#   docker run --rm -e K6_CLOUD_TOKEN -v "$PWD/archive:/archive" \
#       k6-harvester harvest --project 3458575 --since 7d --out /archive
#
# The image runs as uid 10001 (as the Kubernetes examples in config/ expect): a mounted
# archive directory must be writable by it. stderr is not a TTY in a container, so the
# log is one JSON line per event (docker logs, kubectl logs).

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY harvester ./harvester
# Wheels of the harvester and of exactly what it needs, uvloop included ([fast]); the
# final stage installs all of them and nothing else.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[fast]"

FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin harvester \
    && install -d -o harvester -g harvester -m 0750 /archive
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /archive
# The worker's /healthz and /metrics (give --listen-host 0.0.0.0 in a container).
EXPOSE 9464
ENTRYPOINT ["harvester"]
CMD ["--help"]
