# syntax=docker/dockerfile:1
# VLMGuard target image: NVIDIA Triton (tritonserver 2.51 from the nvidia-pytriton wheel) serving
# the target_vlm Python-backend model. One environment with numpy<2 (the Python-backend stub is
# built against numpy 1.x and corrupts BYTES tensors under numpy 2), torch (CUDA build from PyPI)
# and transformers, plus the vlmguard package for its launcher.
#   docker build -f docker/triton.Dockerfile -t vlmguard/triton:0.1.0 .
# Run with the model repository that `vlmguard triton-repo --kind gpu --server-model-path
# /weights/<model>` wrote mounted at /models and the weights at /weights (the chart's layout):
#   docker run --gpus all -v $PWD/repo:/models:ro -v $PWD/weights:/weights:ro \
#     -p 8001:8001 -p 8000:8000 vlmguard/triton:0.1.0
# Probes: HTTP GET /v2/health/live and /v2/health/ready on 8000; gRPC inference on 8001;
# Prometheus metrics on 8002.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY services/vlmguard/serving/triton/stub-requirements.txt /tmp/stub-requirements.txt
# The stub's environment first (pinned, numpy 1.26), then the server binary without its
# declared dependencies, then vlmguard (its numpy>=1.26,<3 accepts the pinned 1.26).
RUN pip install -r /tmp/stub-requirements.txt \
    && pip install --no-deps nvidia-pytriton==0.7.0
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip install . "numpy==1.26.4" \
    && python -c "import numpy; assert numpy.__version__.startswith('1.')" \
    && python -c "from vlmguard.serving.triton.launch import find_dist; find_dist()"

FROM python:3.11-slim AS runtime
RUN groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vlmguard
COPY --from=build /opt/venv /opt/venv
# The stub finds its Python first on PATH; libpython of this image is in /usr/local/lib.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLMGUARD_TRITON_PYTHON_ENV=/opt/venv
USER 10001:10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["python", "-m", "vlmguard.serving.triton.launch"]
CMD ["--model-repository", "/models", "--host", "0.0.0.0", "--grpc-port", "8001", \
     "--http-port", "8000", "--metrics-port", "8002"]
