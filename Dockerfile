# syntax=docker/dockerfile:1
# Kubeloop images, one target each: operator, trainer, server.
#   docker build --target operator -t ghcr.io/kubeloop/operator:0.1.0 .
# BASE_IMAGE is a build argument so the images build where no public registry is reachable: any Debian-like
# image with python3 (>= 3.11) and its venv module works (cluster/build-images.sh uses a debootstrap base).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Pip settings pass through as build arguments (a private index, a proxy's CA bundle); none is stored
# in the final images.
ARG PIP_INDEX_URL
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator

FROM build AS venv-operator
RUN python3 -m venv /opt/kubeloop && /opt/kubeloop/bin/pip install --no-compile -q '.'

FROM build AS venv-trainer
RUN python3 -m venv /opt/kubeloop && /opt/kubeloop/bin/pip install --no-compile -q '.[trainer]'

FROM build AS venv-server
RUN python3 -m venv /opt/kubeloop && /opt/kubeloop/bin/pip install --no-compile -q '.[server]'

FROM ${BASE_IMAGE} AS runtime-base
# A fixed non-root user; the pods also set runAsNonRoot and a read-only root filesystem.
ENV PATH=/opt/kubeloop/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
WORKDIR /tmp

FROM runtime-base AS operator
COPY --from=venv-operator /opt/kubeloop /opt/kubeloop
ENTRYPOINT ["kopf", "run", "--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "-m", "kubeloop.controllers.main"]

FROM runtime-base AS trainer
ENV MPLCONFIGDIR=/tmp/matplotlib
COPY --from=venv-trainer /opt/kubeloop /opt/kubeloop
ENTRYPOINT ["python3", "-m", "kubeloop.runtime"]

FROM runtime-base AS server
COPY --from=venv-server /opt/kubeloop /opt/kubeloop
EXPOSE 8080
ENTRYPOINT ["python3", "-m", "kubeloop.runtime"]
CMD ["serve"]
