# syntax=docker/dockerfile:1
# VLMGuard gateway image: the package WITHOUT torch or any model (base dependencies only).
# With a Redis queue the gateway only validates, enqueues and applies policy; stage workers
# (docker/worker.Dockerfile) run the models.
#   docker build -f docker/gateway.Dockerfile -t vlmguard/gateway:0.1.0 .
# Chart: image.gateway (image: vlmguard/gateway:<appVersion>).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY services ./services
# No extras: grpcio, pydantic, redis, pillow, numpy... (pyproject [project].dependencies).
RUN pip install -c requirements.lock . \
    && python -c "import vlmguard.gateway.server, sys; assert 'torch' not in sys.modules"

FROM python:3.11-slim AS runtime
RUN groupadd --gid 10001 vlmguard \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vlmguard
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    HF_HUB_OFFLINE=1 VLMGUARD_CACHE_DIR=/var/cache/vlmguard
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["vlmguard"]
CMD ["serve", "--config", "/etc/vlmguard/config.yaml"]
