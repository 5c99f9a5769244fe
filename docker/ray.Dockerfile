# syntax=docker/dockerfile:1
# VLMGuard on Ray Serve: the worker image's contents (vlmguard[models]: CPU torch, the tier-1
# weights in vlmguard-models) plus [ray] (ray[serve] 2.60), versions from requirements.lock. One
# image for the KubeRay head and worker pods of a RayService (import_path
# vlmguard.serving.ray_app:app, grpc_servicer_functions vlmguard.serving.ray_grpc:add_vlmguard_services),
# and for `vlmguard serve --ray` on one machine (the default command).
#   docker build -f docker/ray.Dockerfile -t vlmguard/ray:0.1.0 .
#   (no registry: scripts/images.py build ray, docs/images.md)
# Every Ray node must run the same image (same Python 3.11, same Ray, same package).
# For GPU nodes (rewriter/target with num_gpus), build with a CUDA torch:
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
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
# torch first and pinned, from the CPU index: an unpinned torch pulls a multi-GB CUDA build.
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
# The model files in vlmguard-models (scripts/asset_wheels.toml), in a layer before the code.
COPY requirements.lock ./
COPY scripts/asset_wheels.py scripts/asset_wheels.toml scripts/asset_wheels.sha256 ./scripts/
RUN python scripts/asset_wheels.py build --out /wheels vlmguard-models \
    && rm -rf .cache
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install -c requirements.lock /wheels/vlmguard_models-*.whl ".[models,ray]" \
    && python -c "import vlmguard.serving.ray_app, vlmguard.serving.ray_grpc"

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vlmguard-ray" \
      org.opencontainers.image.description="VLMGuard on Ray Serve (KubeRay head and worker pods)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp for torch/onnxruntime threads, libglib for OpenCV (headless); wget for KubeRay's
# readiness/liveness probes (they call the Ray agent and the Serve proxy with wget); KubeRay
# starts `ray start` through bash.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 wget \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
    && groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/vlmguard --shell /bin/bash vlmguard
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/vlmguard
# Ray writes its session files under /tmp/ray and its token under $HOME/.ray (both writable by
# the non-root user); no hub access at run time (weights ship in the packages).
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/home/vlmguard HF_HUB_OFFLINE=1 VLMGUARD_CACHE_DIR=/home/vlmguard/.cache/vlmguard
USER 10001:10001
# 6379 GCS, 8265 dashboard, 10001 Ray client, 8000 Serve HTTP proxy, 9000 Serve gRPC proxy,
# 52365 dashboard agent (KubeRay probes).
EXPOSE 6379 8265 10001 8000 9000 52365
# KubeRay probes the pods itself (wget on the agent and the proxy); run alone, the guard's gRPC
# health on the Serve proxy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel(os.environ.get('VLMGUARD_HEALTH_ADDR', '127.0.0.1:9000')); sys.exit(0 if g.HealthStub(ch).Check(h.HealthCheckRequest(service=''), timeout=4).status == h.HealthCheckResponse.SERVING else 1)"]
# KubeRay replaces the command with its `ray start ...`; run alone, the guard on a local Ray.
CMD ["vlmguard", "serve", "--ray", "--config", "/etc/vlmguard/config.yaml"]
