# docker-registry 3 as a container image.
#
#   docker build -t docker-registry .                        # on python:3.11-slim
#   docker run -p 5000:5000 -v registry-data:/var/lib/registry docker-registry
#
# BASE may be any Debian-like image with Python 3.11+ and its venv module (tests/test_container_image.py builds on a
# root filesystem made with mmdebstrap, as no image registry is reachable there). Configure with a file mounted at
# /etc/docker-registry/config.yml, or with REGISTRY_* variables (REGISTRY_DATABASE_URL, REGISTRY_STORAGE_S3_BUCKET,
# ...; docs/configuration.md). PIP_ARGS adds options to pip (e.g. "--no-index --find-links=/src/wheels" with
# wheels, the build backend's included, placed in ./wheels).
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG PIP_ARGS=""
ARG EXTRAS=postgres

COPY . /src
RUN python3 -m venv /opt/docker-registry \
 && /opt/docker-registry/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} /src/core "/src[${EXTRAS}]" \
 && rm -rf /src \
 && useradd --system --uid 10000 --user-group --home-dir /var/lib/registry --no-create-home registry \
 && mkdir -p /var/lib/registry /etc/docker-registry \
 && chown registry:registry /var/lib/registry

COPY deploy/config.yml /etc/docker-registry/config.yml

ENV PATH=/opt/docker-registry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER registry
VOLUME /var/lib/registry
EXPOSE 5000
# /readyz: 503 while storage or the database fails its checks, so an orchestrator stops sending traffic
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('REGISTRY_HEALTHCHECK_URL', 'http://127.0.0.1:5000/readyz'), timeout=2)"]
ENTRYPOINT ["docker-registry", "serve"]
CMD ["/etc/docker-registry/config.yml"]
