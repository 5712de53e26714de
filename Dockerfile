# One image for both `luna-plugins operator` and `luna-plugins sidecar`.
#   docker build -t luna-plugins:0.1.0 .
#   docker run --rm luna-plugins:0.1.0 operator --help
#
# Build arguments (both builders, BuildKit and the classic one, take this file as it is):
#   BASE_IMAGE  a Debian-based image with python3 (>= 3.11) and its venv module; default
#               python:3.11-slim. The test harness's `luna-cluster image` builds one from Debian's
#               packages where no registry can be reached.
#   WHEELS      "index" (default): install from the package index while building;
#               "wheelhouse": install offline from the wheels in ./wheelhouse (built on the host:
#               `pip wheel --wheel-dir wheelhouse .`), so no build step needs the network.
ARG BASE_IMAGE=python:3.11-slim

# --- build: the project and its dependencies in a virtual environment -------------------------
FROM ${BASE_IMAGE} AS build
ARG WHEELS=index
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY wheelhouse/ /wheelhouse/
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY cli/ cli/
COPY operator/ operator/
COPY contract/ contract/
COPY client/ client/
RUN python3 -m venv /opt/luna-plugins \
    && if [ "$WHEELS" = wheelhouse ]; then \
         /opt/luna-plugins/bin/pip install --no-index --find-links=/wheelhouse luna-plugins; \
       else \
         /opt/luna-plugins/bin/pip install /src; \
       fi \
    && /opt/luna-plugins/bin/luna-plugins --help >/dev/null

# --- runtime: the environment alone, run as a non-root user -----------------------------------
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/luna-plugins/bin:$PATH
COPY --from=build /opt/luna-plugins /opt/luna-plugins
# the stand-in handlers service of the chart's demo workload (demo.enabled)
COPY examples/demo_service.py /opt/luna-plugins/demo_service.py
# the user without useradd, which minimal Debian bases lack
RUN echo 'luna:x:10001:10001:luna-plugins:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'luna:x:10001:' >> /etc/group
WORKDIR /tmp
USER 10001:10001
# routes, admin (loopback), metrics of the sidecar; liveness of the operator
EXPOSE 8080 9100 8090
ENTRYPOINT ["luna-plugins"]
CMD ["--help"]
