# syntax=docker/dockerfile:1
# One image for both `luna-plugins operator` and `luna-plugins sidecar`.
#   docker build -t luna-plugins:0.1.0 .
#   docker run --rm luna-plugins:0.1.0 operator --help

# --- build: a wheel of the project, plus wheels of its dependencies ---------------------------
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY cli/ cli/
COPY tools/luna_cluster/ tools/luna_cluster/
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed into a clean slim image, run as a non-root user ------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels luna-plugins \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin luna
# the stand-in handlers service of the chart's demo workload (demo.enabled)
COPY examples/demo_service.py /opt/luna-plugins/demo_service.py
WORKDIR /tmp
USER 10001:10001
# routes, admin (loopback), metrics of the sidecar; liveness of the operator
EXPOSE 8080 9100 8090
ENTRYPOINT ["luna-plugins"]
CMD ["--help"]
