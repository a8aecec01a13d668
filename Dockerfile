# syntax=docker/dockerfile:1
# Kubeloop images, one target each: operator, trainer, server.
#   docker build --target operator -t ghcr.io/kubeloop/operator:0.1.0 .
# BASE_IMAGE is a build argument so the images build where no public registry is reachable: any Debian-like
# image with python3 (>= 3.11) and its venv module works (cluster/build-images.sh uses a debootstrap base).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt docker/requirements.py ./
# Dependencies go in a layer of their own that changes only with pyproject.toml; the code comes after.

# Pip settings pass through as build arguments (a private index, a proxy's CA bundle); none is kept
# in the final images. They are declared in each stage because ARG does not cross stages.
FROM build AS venv-operator
ARG PIP_INDEX_URL
ARG PIP_CERT
RUN python3 -m venv /opt/kubeloop && python3 requirements.py > req.txt \
    && /opt/kubeloop/bin/pip install -q --no-compile -c constraints.txt -r req.txt
COPY README.md ./
COPY operator ./operator
RUN /opt/kubeloop/bin/pip install -q --no-compile --no-deps .

FROM build AS venv-trainer
ARG PIP_INDEX_URL
ARG PIP_CERT
RUN python3 -m venv /opt/kubeloop && python3 requirements.py trainer > req.txt \
    && /opt/kubeloop/bin/pip install -q --no-compile -c constraints.txt -r req.txt
COPY README.md ./
COPY operator ./operator
RUN /opt/kubeloop/bin/pip install -q --no-compile --no-deps .

FROM build AS venv-server
ARG PIP_INDEX_URL
ARG PIP_CERT
RUN python3 -m venv /opt/kubeloop && python3 requirements.py server > req.txt \
    && /opt/kubeloop/bin/pip install -q --no-compile -c constraints.txt -r req.txt
COPY README.md ./
COPY operator ./operator
RUN /opt/kubeloop/bin/pip install -q --no-compile --no-deps .

FROM ${BASE_IMAGE} AS runtime-base
# A named user: some libraries (kopf's peering identity, getpass) look the uid up in /etc/passwd.
RUN groupadd --gid 65532 kubeloop && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp \
    --shell /usr/sbin/nologin kubeloop
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
