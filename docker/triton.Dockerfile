# syntax=docker/dockerfile:1
# VLMGuard target image: NVIDIA Triton (tritonserver 2.51 of nvidia-pytriton, repacked in
# vlmguard-tritonserver by scripts/asset_wheels.py) serving the target_vlm Python-backend model.
# One environment with numpy<2 (the Python-backend stub is built against numpy 1.x and corrupts
# BYTES tensors under numpy 2), torch and transformers (stub-requirements.txt, pinned), plus the
# vlmguard package for its launcher.
#   docker build -f docker/triton.Dockerfile -t vlmguard/triton:0.1.0 .
#   (no registry: scripts/images.py build triton, docs/images.md)
# Run with the model repository that `vlmguard triton-repo --kind gpu --server-model-path
# /weights/<model>` wrote mounted at /models and the weights at /weights (the chart's layout):
#   docker run --gpus all -v $PWD/repo:/models:ro -v $PWD/weights:/weights:ro \
#     -p 8001:8001 -p 8000:8000 vlmguard/triton:0.1.0
# Probes: HTTP GET /v2/health/live and /v2/health/ready on 8000; gRPC inference on 8001;
# Prometheus metrics on 8002.
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
# The stub's environment first (pinned, numpy 1.26; torch from PyPI: the CUDA-enabled build).
COPY services/vlmguard/serving/triton/stub-requirements.txt /tmp/stub-requirements.txt
RUN pip install -r /tmp/stub-requirements.txt
# The server binary tree, repacked from the exact nvidia-pytriton wheel of the lock.
COPY requirements.lock ./
COPY scripts/asset_wheels.py scripts/asset_wheels.toml scripts/asset_wheels.sha256 ./scripts/
RUN python scripts/asset_wheels.py build --out /wheels vlmguard-tritonserver \
    && rm -rf .cache
# vlmguard for the launcher (its numpy>=1.26,<3 accepts the pinned 1.26; not the lock, which
# pins numpy 2 for the serving venv).
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install /wheels/vlmguard_tritonserver-*.whl . "numpy==1.26.4" \
    && python -c "import numpy; assert numpy.__version__.startswith('1.')" \
    && python -c "from vlmguard.serving.triton.launch import find_dist; find_dist()"

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vlmguard-triton" \
      org.opencontainers.image.description="NVIDIA Triton serving VLMGuard's target_vlm model" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vlmguard
COPY --from=build /opt/venv /opt/venv
# The stub finds its Python first on PATH; the launcher puts the base's libpython directory
# (sysconfig LIBDIR) on LD_LIBRARY_PATH.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLMGUARD_TRITON_PYTHON_ENV=/opt/venv
USER 10001:10001
EXPOSE 8000 8001 8002
# Triton's own liveness (HTTP); VLMGUARD_HEALTH_ADDR when its HTTP port is not 8000.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://%s/v2/health/live' % os.environ.get('VLMGUARD_HEALTH_ADDR', '127.0.0.1:8000'), timeout=4)"]
ENTRYPOINT ["python", "-m", "vlmguard.serving.triton.launch"]
CMD ["--model-repository", "/models", "--host", "0.0.0.0", "--grpc-port", "8001", \
     "--http-port", "8000", "--metrics-port", "8002"]
