# syntax=docker/dockerfile:1
# VLMGuard gateway image: the `vlmguard` package alone, WITHOUT torch or any model (base
# dependencies only, versions from requirements.lock). With a Redis queue (queue.url) the
# gateway only validates, enqueues and applies policy; the stage workers (docker/worker.Dockerfile)
# run the models. A gateway that runs tier 1 in process (queue.url empty) needs the worker image.
#   docker build -f docker/gateway.Dockerfile -t vlmguard/gateway:0.1.0 .
#   (no registry: scripts/images.py build gateway, docs/images.md)
# Chart: image.gateway (image: vlmguard/gateway:<appVersion>), config mounted at
# /etc/vlmguard/config.yaml.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Where pip finds packages (a local mirror, a TLS-inspecting proxy's CA bundle mounted into the
# build): build-time only, never in the runtime stage. Empty: PyPI with the system CAs.
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=
ARG PIP_CERT=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY services ./services
# The core (grpcio, pydantic, redis, pillow, numpy...) and [http] for the OpenAI-compatible front
# door (vlmguard serve --http); no model extras.
RUN pip install -c requirements.lock ".[http]" \
    && python -c "import vlmguard.gateway.server, vlmguard.http.app, sys; assert 'torch' not in sys.modules" \
    && ! python -c "import torch" 2>/dev/null

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vlmguard-gateway" \
      org.opencontainers.image.description="VLMGuard gRPC gateway (no models; stage workers run them)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vlmguard \
    && install -d -o 10001 -g 10001 -m 0755 /var/cache/vlmguard
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 VLMGUARD_CACHE_DIR=/var/cache/vlmguard
USER 10001:10001
EXPOSE 50051 9464
# gRPC health (grpc.health.v1, the server's own status ""): what the chart's probes ask too.
# VLMGUARD_HEALTH_ADDR when the gateway listens elsewhere than port 50051.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel(os.environ.get('VLMGUARD_HEALTH_ADDR', '127.0.0.1:50051')); sys.exit(0 if g.HealthStub(ch).Check(h.HealthCheckRequest(service=''), timeout=4).status == h.HealthCheckResponse.SERVING else 1)"]
ENTRYPOINT ["vlmguard"]
CMD ["serve", "--config", "/etc/vlmguard/config.yaml"]
