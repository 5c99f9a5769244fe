# syntax=docker/dockerfile:1
# VLMGuard training image: every step of the offline pipeline (vlmguard synth, synth merge,
# train rewriter under torchrun, eval, redteam, pipeline publish) and the pipeline runner itself
# (`vlmguard pipeline run --executor kubernetes`, the chart's retrain CronJob): vlmguard-training
# over vlmguard[models,http], versions from requirements.lock. torch is pinned to 2.13.0 from
# PyPI by default (the CUDA-enabled build, for GPU nodes); for a CPU-only image pass
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# TRL + PEFT, the tier-1 models, the SmolLM2 base, the kubernetes client. training/ (recipes,
# curated data) is copied to /app/training: the Jobs run in /app.
#   docker build -f docker/training.Dockerfile -t vlmguard/training:0.1.0 .
#   (no registry: scripts/images.py build training, docs/images.md)
# Chart: pipeline.image (image: vlmguard/training:<appVersion>); recipe kubernetes.image.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://pypi.org/simple
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
# torch first and pinned: the extras below must not pull another build.
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
# The model files in vlmguard-models (scripts/asset_wheels.toml), in a layer before the code.
COPY requirements.lock ./
COPY scripts/asset_wheels.py scripts/asset_wheels.toml scripts/asset_wheels.sha256 ./scripts/
RUN python scripts/asset_wheels.py build --out /wheels vlmguard-models \
    && rm -rf .cache
COPY pyproject.toml README.md ./
COPY services ./services
COPY training ./training
RUN pip install -c requirements.lock /wheels/vlmguard_models-*.whl ".[models,http]" ./training \
    && python -c "import torch, trl, peft, kubernetes, vlmguard_training.pipeline.kubernetes; assert torch.__version__.startswith('2.13.0'), torch.__version__"

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vlmguard-training" \
      org.opencontainers.image.description="VLMGuard offline jobs: synth, train, eval, redteam, pipeline" \
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
COPY training/recipes /app/training/recipes
COPY training/data /app/training/data
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 VLMGUARD_CACHE_DIR=/var/cache/vlmguard
USER 10001:10001
# torchrun rendezvous (pipeline.train.masterPort).
EXPOSE 29500
# Batch jobs, not a service: nothing to probe.
HEALTHCHECK NONE
ENTRYPOINT ["vlmguard"]
CMD ["pipeline", "--help"]
