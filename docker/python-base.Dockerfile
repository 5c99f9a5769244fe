# syntax=docker/dockerfile:1
# A Python 3.11 base from a plain Debian bookworm image, for machines that cannot pull
# python:3.11-slim (no registry): Debian's own python3.11 with venv, the shared libpython
# (Triton's Python-backend stub links it) and the CA certificates. scripts/images.py builds it
# over a local `debootstrap` image and passes it to the other Dockerfiles as BASE_IMAGE.
#   podman build -f docker/python-base.Dockerfile --build-arg DEBIAN_IMAGE=localhost/debian:bookworm-local \
#     -t localhost/vlmguard-python:3.11-bookworm .
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv libpython3.11 \
       ca-certificates \
    && ln -sf /usr/bin/python3.11 /usr/local/bin/python3 \
    && ln -sf /usr/bin/python3.11 /usr/local/bin/python \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log
ENV LANG=C.UTF-8
CMD ["python3"]
